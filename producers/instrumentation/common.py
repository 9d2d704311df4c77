"""What the OpenAI and Anthropic wrappers share: the patch table, one call's lifecycle and the stream proxies.

Rules every piece follows, because the caller's own call matters more than its telemetry:

* arguments pass through untouched and the caller's exception is re-raised with a bare ``raise``;
* every telemetry step is wrapped by :func:`dont_throw`, so a bug here can lose an event, never a reply;
* a stream is handed back inside a proxy that forwards every attribute (``isinstance`` still holds) and
  records the call once, when the stream is exhausted, fails, is closed or is garbage-collected;
* wrapping patches the client *instance* (instance attributes shadow the class methods) and
  :func:`uninstrument` deletes them again, so nothing global changes and nothing happens at import time.

Sync and async differ only in the two lines that call the SDK; the extraction lives in ``Reader``
subclasses of the provider modules and is shared by both.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeVar

from llmpulse.producers.tracking import CallTracker

log = logging.getLogger("llmpulse.instrumentation")

PATCHES_ATTR = "_llmpulse_patches"
F = TypeVar("F", bound=Callable[..., Any])


class Recorder(Protocol):
    """What the wrappers need from a :class:`~llmpulse.producers.Pulse`: ``record(**fields)``."""

    def record(self, **fields: Any) -> Any: ...


def require(module: str, extra: str = "instrument") -> ModuleType:
    """Import an optional client library, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"llmpulse instrumentation needs the '{module}' package: pip install 'llmpulse[{extra}]'"
        ) from exc


def dont_throw(func: F) -> F:
    """Telemetry helpers must never raise into the caller: log at debug and return None instead."""

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception:
            log.debug("llmpulse instrumentation: %s failed", func.__qualname__, exc_info=True)
            return None

    return guarded  # type: ignore[return-value]


def text_of(content: Any) -> str:
    """Plain text of a message content: a string, or a list of parts/blocks with ``text`` (dicts or models)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        parts = (part.get("text") if isinstance(part, dict) else getattr(part, "text", None) for part in content)
        return "\n".join(part for part in parts if isinstance(part, str))
    return ""


def count(value: Any) -> int:
    """A token count from a usage object, where absent or None means 0."""
    return int(value) if isinstance(value, int) else 0


class Reader:
    """Reads one call's request and answer into llm_call fields; a fresh instance per call holds stream state."""

    __slots__ = ("fields", "texts")

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.texts: list[str] = []

    def prompt(self, kwargs: dict[str, Any]) -> str | None:
        """The prompt text of the request (only asked for when the Pulse captures text)."""
        return None

    def response(self, result: Any) -> None:
        """Absorb a complete (non-streamed) answer."""

    def chunk(self, item: Any) -> bool:
        """Absorb one stream item; True when it carried content (its arrival is the first token)."""
        return False

    def usage(self, input_tokens: Any, output_tokens: Any, cached_tokens: Any) -> None:
        self.fields.update(
            input_tokens=count(input_tokens), output_tokens=count(output_tokens), cached_tokens=count(cached_tokens)
        )

    def model(self, result: Any) -> None:
        name = getattr(result, "model", None)
        if isinstance(name, str) and name:
            self.fields["response_model"] = name


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One SDK method to wrap: where it hangs off the client and how its answers are read."""

    path: tuple[str, ...]  # attributes from the client to the resource, e.g. ("chat", "completions")
    method: str
    operation: str  # gen_ai.operation.name
    reader: type[Reader]
    # For methods returning a context manager that makes the request in __enter__ (messages.stream): the
    # proxy class wrapping that manager, called as manager_proxy(manager, target, kwargs).
    manager_proxy: Callable[[Any, Target, dict[str, Any]], Any] | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Everything a wrapper needs to start a call, fixed at instrumentation time."""

    pulse: Recorder
    provider: str
    endpoint: Endpoint
    stream_types: tuple[type, ...]
    capture_text: bool
    defaults: dict[str, Any]


class Call:
    """One call in flight: a CallTracker plus the endpoint's Reader. Ends exactly once."""

    __slots__ = ("done", "reader", "target", "tracker")

    def __init__(self, target: Target, kwargs: dict[str, Any]) -> None:
        self.target = target
        self.reader = target.endpoint.reader()
        self.done = False
        model = kwargs.get("model")
        self.tracker = CallTracker(
            target.pulse,
            provider=target.provider,
            request_model=model if isinstance(model, str) and model else "unknown",
            operation=target.endpoint.operation,
            **target.defaults,
        )
        if target.capture_text:
            prompt = self.reader.prompt(kwargs)
            if prompt:
                self.tracker.set(prompt_text=prompt)
        self.tracker.__enter__()

    @dont_throw
    def result(self, result: Any) -> Any:
        """Record a plain answer now, or wrap a stream to record it when it ends."""
        sync_stream, async_stream = self.target.stream_types
        if isinstance(result, sync_stream):
            return StreamProxy(result, self)
        if isinstance(result, async_stream):
            return AsyncStreamProxy(result, self)
        self.reader.response(result)
        self.end()
        return result

    @dont_throw
    def chunk(self, item: Any) -> None:
        if self.reader.chunk(item):
            self.tracker.first_token()

    @dont_throw
    def end(self, exc: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        self.tracker.set(**self.reader.fields)
        if self.target.capture_text and self.reader.texts:
            self.tracker.set(response_text="".join(self.reader.texts))
        self.tracker.__exit__(None if exc is None else type(exc), exc, None)


@dont_throw
def start(target: Target, kwargs: dict[str, Any], extra: dict[str, Any] | None = None) -> Call:
    call = Call(target, kwargs)
    if extra and "labels" in extra:  # a prompt the guard flagged (observe mode)
        call.tracker.set(labels={**(target.defaults.get("labels") or {}), **extra["labels"]})
    return call


_MAX_OUTPUT = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def preflight(target: Target, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The Pulse's guard and admission gate (producers/preflight.py), before any request is sent. Raises only
    PromptBlocked or BudgetExceeded; the user is the client's ``user_hash`` field, else the request's own."""
    check = getattr(target.pulse, "preflight", None)
    if check is None:
        return None
    try:
        model = kwargs.get("model")
        limit = next((kwargs[name] for name in _MAX_OUTPUT if isinstance(kwargs.get(name), int)), None)
        metadata = kwargs.get("metadata")
        user = target.defaults.get("user_hash") or kwargs.get("user") or (
            metadata.get("user_id") if isinstance(metadata, dict) else None)
    except Exception:  # never refuse a call for a reason of our own
        return None
    return check(provider=target.provider, model=model if isinstance(model, str) and model else "unknown",
                 prompt=lambda: target.endpoint.reader().prompt(kwargs), max_output_tokens=limit,
                 user=user if isinstance(user, str) else None, service=target.defaults.get("service"))


def fail(call: Call | None, exc: BaseException) -> None:
    """End the call with the caller's exception (which the caller re-raises); nothing when telemetry failed."""
    if call is not None:
        call.end(exc)


def finish(call: Call | None, result: Any) -> Any:
    """The caller's result, or its stream proxy; the raw result whenever telemetry failed."""
    if call is None:
        return result
    proxied = call.result(result)
    return result if proxied is None else proxied


def wrap_method(original: Callable[..., Any], target: Target) -> Callable[..., Any]:
    """A drop-in for ``original`` that records each call; only the SDK call itself differs sync vs async."""
    if target.endpoint.manager_proxy is not None:
        return _wrap_manager(original, target, target.endpoint.manager_proxy)
    if inspect.iscoroutinefunction(inspect.unwrap(original)):

        @functools.wraps(original)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            call = start(target, kwargs, preflight(target, kwargs))
            try:
                result = await original(*args, **kwargs)
            except BaseException as exc:
                fail(call, exc)
                raise
            return finish(call, result)

        return async_wrapper

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = start(target, kwargs, preflight(target, kwargs))
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            fail(call, exc)
            raise
        return finish(call, result)

    return wrapper


def _wrap_manager(original: Callable[..., Any], target: Target, proxy: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        preflight(target, kwargs)  # the manager sends its request on __enter__: refuse before that
        return proxy(original(*args, **kwargs), target, kwargs)

    return wrapper


# ---- proxies ------------------------------------------------------------------------------------------


class Proxy:
    """Forwards every attribute to the wrapped object and reports its class, so ``isinstance`` holds."""

    __slots__ = ("__wrapped__",)

    def __init__(self, wrapped: Any) -> None:
        object.__setattr__(self, "__wrapped__", wrapped)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance() falls back to __class__
        return type(self.__wrapped__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__wrapped__, name)

    def __setattr__(self, name: str, value: Any) -> None:  # our own slots are set with object.__setattr__
        setattr(self.__wrapped__, name, value)

    def __dir__(self) -> list[str]:
        return dir(self.__wrapped__)

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


class _RecordingProxy(Proxy):
    __slots__ = ("_llmpulse_call",)

    def __init__(self, wrapped: Any, call: Call) -> None:
        super().__init__(wrapped)
        object.__setattr__(self, "_llmpulse_call", call)

    def __del__(self) -> None:  # an abandoned stream still counts as a call
        call = getattr(self, "_llmpulse_call", None)
        if call is not None and not call.done:
            call.end()

    def _pull_raised(self, exc: BaseException) -> None:
        """Taking the next item raised: the end of the stream ends the call cleanly, anything else as a failure."""
        self._llmpulse_call.end(None if isinstance(exc, StopIteration | StopAsyncIteration) else exc)


class StreamProxy(_RecordingProxy):
    """A sync SDK stream that records its call when iteration ends, fails, or the stream is closed."""

    __slots__ = ()

    def __iter__(self) -> StreamProxy:
        return self

    def __next__(self) -> Any:
        try:
            item = next(self.__wrapped__)
        except BaseException as exc:
            self._pull_raised(exc)
            raise
        self._llmpulse_call.chunk(item)
        return item

    def __enter__(self) -> StreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._llmpulse_call.end()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._llmpulse_call.end()


class AsyncStreamProxy(_RecordingProxy):
    """The async twin: same recording, awaited iteration and close."""

    __slots__ = ()

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self.__wrapped__.__anext__()
        except BaseException as exc:
            self._pull_raised(exc)
            raise
        self._llmpulse_call.chunk(item)
        return item

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._llmpulse_call.end()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._llmpulse_call.end()


# ---- patching the client instance -------------------------------------------------------------------------


def instrument_client(
    client: Any, pulse: Recorder, provider: str, endpoints: tuple[Endpoint, ...],
    stream_types: tuple[type, type], defaults: dict[str, Any],
) -> Any:
    """Wrap each endpoint present on ``client`` (older SDKs lack some); TypeError if none is."""
    uninstrument(client)  # instrumenting twice re-targets instead of stacking wrappers
    settings = getattr(pulse, "settings", None)
    capture = bool(getattr(settings, "capture_text", False))
    patched: list[tuple[Any, str]] = []
    for endpoint in endpoints:
        resource = _resolve(client, endpoint.path)
        original = getattr(resource, endpoint.method, None) if resource is not None else None
        if original is None or not callable(original):
            log.debug("llmpulse: %s has no %s.%s; skipped", type(client).__name__, ".".join(endpoint.path),
                      endpoint.method)
            continue
        target = Target(pulse, provider, endpoint, stream_types, capture, dict(defaults))
        setattr(resource, endpoint.method, wrap_method(original, target))
        patched.append((resource, endpoint.method))
    if not patched:
        raise TypeError(f"{type(client).__name__} has none of the {provider} endpoints llmpulse instruments")
    setattr(client, PATCHES_ATTR, patched)
    return client


def _resolve(client: Any, path: tuple[str, ...]) -> Any:
    resource = client
    for name in path:
        resource = getattr(resource, name, None)
        if resource is None:
            return None
    return resource


def uninstrument(client: Any) -> Any:
    """Remove the wrappers from a client instrumented by llmpulse; a no-op on any other client."""
    for resource, method in getattr(client, PATCHES_ATTR, ()):
        if method in getattr(resource, "__dict__", ()):
            delattr(resource, method)  # the class method shows through again
    if PATCHES_ATTR in getattr(client, "__dict__", ()):
        delattr(client, PATCHES_ATTR)
    return client


def is_instrumented(client: Any) -> bool:
    return bool(getattr(client, PATCHES_ATTR, None))
