"""Structured logs: one JSON object a line, carrying the ids of what the line is about.

    with log_fields(request_id="7f3a", trace_id="4bf9..."):       # bound for this request (a contextvar)
        log.info("answered", extra={"model": "gpt-4o"})            # or per line, with ``extra``

:class:`JsonFormatter` writes ``ts``, ``level``, ``logger`` and ``message``, then the fields bound with
:func:`log_fields` in the current context, then the line's own ``extra`` fields, then ``exc_info``. Nothing
else reaches the line: no environment, settings or headers, so a secret is logged only if a caller passes it.

Opt-in for the worker (``LLMPULSE_LOG_FORMAT=json``); the example service (examples/llm_service) uses it by
default. Standard library only, like the other modules the SDK and the processors share.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came from the caller's ``extra``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_BOUND: ContextVar[Mapping[str, Any]] = ContextVar("llmpulse_log_fields", default=MappingProxyType({}))


@contextmanager
def log_fields(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every JSON log line written in this context (a request, a task) until the block ends."""
    token = _BOUND.set(MappingProxyType({**_BOUND.get(), **fields}))
    try:
        yield
    finally:
        _BOUND.reset(token)


def bound_fields() -> Mapping[str, Any]:
    """The fields :func:`log_fields` bound in the current context."""
    return _BOUND.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per record; values that are not JSON types are written as ``str(value)``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_BOUND.get())
        entry.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_"))
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def logging_config(level: str = "info", log_format: LogFormat = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: the root logger at ``level``, one stderr handler in ``log_format``.

    Loggers that exist already stay enabled (their records reach the root handler)."""
    formatter: dict[str, Any] = {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"llmpulse": formatter},
        "handlers": {
            "llmpulse": {"class": "logging.StreamHandler", "formatter": "llmpulse", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level.upper(), "handlers": ["llmpulse"]},
    }


__all__ = ["TEXT_FORMAT", "JsonFormatter", "LogFormat", "bound_fields", "log_fields", "logging_config"]
