"""A small local HTTP server speaking the OpenAI and Anthropic wire formats, for tests, benchmarks and demos.

    with FakeLLMApi() as api:                      # 127.0.0.1 on a free port, served from a daemon thread
        client = OpenAI(base_url=api.openai_base_url, api_key="test")
        client.chat.completions.create(model="gpt-4o", messages=[...])

    python -m llmpulse.producers.simulation.fake_llm_api --port 8808   # standalone, for the example service

Answers are deterministic so tests can assert known values. Tokens are whitespace-separated words:

* The reply is ``"echo: " + <last user text>``; streams send one word per chunk/delta.
* OpenAI: ``prompt_tokens`` counts every message word and ``cached_tokens`` the system-message words (a
  cached system prompt). Embeddings: one 4-dim vector per input, ``prompt_tokens`` = input words.
* Anthropic: a ``system`` string is reported as ``cache_read_input_tokens``; system blocks carrying
  ``cache_control`` as ``cache_creation_input_tokens``, other blocks as cache reads; ``input_tokens`` counts
  only the message words (Anthropic's convention: cache reads and writes are excluded).

The model name selects a scenario: ``...status-429`` / ``...status-500`` (or any code) answer that HTTP error,
``...slow`` sleeps ``slow_seconds`` before answering (client timeouts), ``...ttft`` sleeps ``first_token_delay``
before the first content chunk of a stream, ``...stream-error`` breaks a stream with an error event.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_STATUS = re.compile(r"status-(\d{3})")
_CREATED = 1_700_000_000  # fixed timestamps keep every answer byte-identical between runs


def words(text: str) -> int:
    return len(text.split())


def _text_of(content: Any) -> str:
    """Plain text of a message content: a string or a list of typed parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def reply_for(messages: list[dict[str, Any]]) -> str:
    users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    return "echo: " + (users[-1] if users else "")


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    # ---- plumbing -------------------------------------------------------------------------------
    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, body))
        route = {
            "/v1/chat/completions": self._chat,
            "/v1/embeddings": self._embeddings,
            "/v1/responses": self._responses,
            "/v1/messages": self._messages,
        }.get(self.path.split("?")[0])
        try:
            if route is None:
                self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            if not self._scenario(body):
                route(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass

    def _scenario(self, body: dict[str, Any]) -> bool:
        """Apply the error/slow scenario named by the model; True when the answer was already sent."""
        model = str(body.get("model", ""))
        if "slow" in model:
            time.sleep(self.server.slow_seconds)
        match = _STATUS.search(model)
        if match is None:
            return False
        code = int(match.group(1))
        kind = "rate_limit_error" if code == 429 else "api_error"
        if self.path.startswith("/v1/messages"):
            self._json(code, {"type": "error", "error": {"type": kind, "message": f"fake {code}"}})
        else:
            self._json(code, {"error": {"message": f"fake {code}", "type": kind, "code": None}})
        return True

    def _json(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if code == 429:
            self.send_header("retry-after", "0")
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: Iterator[tuple[str | None, Any]], delay_before: int | None = None) -> None:
        """Send Server-Sent Events; ``delay_before`` = index of the event preceded by ``first_token_delay``."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        for index, (event, data) in enumerate(events):
            if index == delay_before:
                time.sleep(self.server.first_token_delay)
            text = data if isinstance(data, str) else json.dumps(data)
            frame = (f"event: {event}\n" if event else "") + f"data: {text}\n\n"
            self.wfile.write(frame.encode())
            self.wfile.flush()
        self.close_connection = True

    # ---- OpenAI ---------------------------------------------------------------------------------
    def _chat(self, body: dict[str, Any]) -> None:
        model, messages = body["model"], body.get("messages", [])
        reply = reply_for(messages)
        prompt = sum(words(_text_of(m.get("content"))) for m in messages)
        cached = sum(words(_text_of(m.get("content"))) for m in messages if m.get("role") == "system")
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": words(reply),
            "total_tokens": prompt + words(reply),
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": reply}
            choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            self._json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": _CREATED,
                             "model": f"{model}-2024", "choices": [choice], "usage": usage})
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._sse(self._chat_chunks(model, reply, usage if include_usage else None), delay_before=1)

    def _chat_chunks(self, model: str, reply: str, usage: dict[str, Any] | None) -> Iterator[tuple[None, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": _CREATED,
                    "model": f"{model}-2024", "choices": [choice]}

        yield None, chunk({"role": "assistant", "content": ""})
        for index, word in enumerate(reply.split()):
            yield None, chunk({"content": word if index == 0 else " " + word})
            if index == 0 and "stream-error" in model:
                yield None, {"error": {"message": "fake mid-stream failure", "type": "server_error"}}
                return
        yield None, chunk({}, "stop")
        if usage is not None:
            yield None, {**chunk({}), "choices": [], "usage": usage}
        yield None, "[DONE]"

    def _embeddings(self, body: dict[str, Any]) -> None:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.25, -0.5, 0.125, float(words(str(text)))]}
                for i, text in enumerate(inputs)]
        tokens = sum(words(str(text)) for text in inputs)
        self._json(200, {"object": "list", "model": f"{body['model']}-v1", "data": data,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _responses(self, body: dict[str, Any]) -> None:
        raw = body.get("input", "")
        messages = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
        reply = reply_for(messages)
        prompt = sum(words(_text_of(m.get("content"))) for m in messages) + words(body.get("instructions") or "")
        self._json(200, {
            "id": "resp_fake", "object": "response", "created_at": _CREATED, "status": "completed",
            "model": f"{body['model']}-2024", "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "output": [{"type": "message", "id": "msg_fake", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": reply, "annotations": []}]}],
            "usage": {"input_tokens": prompt, "output_tokens": words(reply), "total_tokens": prompt + words(reply),
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        })

    # ---- Anthropic ------------------------------------------------------------------------------
    def _messages(self, body: dict[str, Any]) -> None:
        model, messages = body["model"], body.get("messages", [])
        reply = reply_for(messages)
        usage = _anthropic_usage(body.get("system"), messages)
        if not body.get("stream"):
            self._json(200, {"id": "msg_fake", "type": "message", "role": "assistant", "model": f"{model}-2024",
                             "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn",
                             "stop_sequence": None, "usage": {**usage, "output_tokens": words(reply)}})
            return
        self._sse(self._message_events(model, reply, usage), delay_before=2)

    def _message_events(self, model: str, reply: str, usage: dict[str, int]) -> Iterator[tuple[str, Any]]:
        message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": f"{model}-2024",
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
        yield "message_start", {"type": "message_start", "message": message}
        yield "content_block_start", {"type": "content_block_start", "index": 0,
                                      "content_block": {"type": "text", "text": ""}}
        for index, word in enumerate(reply.split()):
            delta = {"type": "text_delta", "text": word if index == 0 else " " + word}
            yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            if index == 0 and "stream-error" in model:
                yield "error", {"type": "error", "error": {"type": "overloaded_error", "message": "fake"}}
                return
        yield "content_block_stop", {"type": "content_block_stop", "index": 0}
        yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": words(reply)}}
        yield "message_stop", {"type": "message_stop"}


def _anthropic_usage(system: Any, messages: list[dict[str, Any]]) -> dict[str, int]:
    read = creation = 0
    if isinstance(system, str):
        read = words(system)
    elif isinstance(system, list):
        for block in system:
            count = words(str(block.get("text", "")))
            if block.get("cache_control"):
                creation += count
            else:
                read += count
    prompt = sum(words(_text_of(m.get("content"))) for m in messages)
    return {"input_tokens": prompt, "cache_read_input_tokens": read, "cache_creation_input_tokens": creation}


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], slow_seconds: float, first_token_delay: float) -> None:
        super().__init__(address, _Handler)
        self.slow_seconds = slow_seconds
        self.first_token_delay = first_token_delay
        self.requests: list[tuple[str, dict[str, Any]]] = []  # what clients sent, for assertions


class FakeLLMApi:
    """The fake API served from a daemon thread; a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, slow_seconds: float = 2.0, first_token_delay: float = 0.2
    ) -> None:
        self.server = FakeServer((host, port), slow_seconds, first_token_delay)
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-llm-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url  # the Anthropic client appends /v1/messages itself

    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        return self.server.requests

    def start(self) -> FakeLLMApi:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeLLMApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the fake OpenAI/Anthropic API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8808)
    args = parser.parse_args(argv)
    api = FakeLLMApi(args.host, args.port)
    print(f"fake LLM API on {api.url} (OpenAI base_url {api.openai_base_url})", flush=True)
    try:
        api.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        api.server.server_close()


if __name__ == "__main__":
    main()
