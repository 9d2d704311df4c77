"""Structured logs (llmpulse/logs.py): one JSON object a line with the bound and per-line ids, opt-in for the
worker (LLMPULSE_LOG_FORMAT=json), whose alert and incident lines carry their ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pydantic
import pytest

from llmpulse.logs import JsonFormatter, bound_fields, log_fields, logging_config
from tests.support import json_logs


def record(msg: str = "hello %s", args: tuple[Any, ...] = ("world",), **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("llmpulse.worker", logging.WARNING, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_line_is_one_json_object_with_the_bound_and_the_extra_fields() -> None:
    with log_fields(request_id="r-1", trace_id="t" * 32):
        line = json.loads(JsonFormatter().format(record(alert_id="a-9", observed=1.5, when=object)))
    assert line["level"] == "WARNING" and line["logger"] == "llmpulse.worker" and line["message"] == "hello world"
    assert line["ts"].endswith("+00:00")
    assert (line["request_id"], line["trace_id"], line["alert_id"], line["observed"]) == ("r-1", "t" * 32, "a-9", 1.5)
    assert line["when"] == str(object)  # not JSON: written as text, never an error
    standard = {"ts", "level", "logger", "message"}
    assert set(line) == standard | {"request_id", "trace_id", "alert_id", "observed", "when"}


def test_bound_fields_nest_and_end_with_their_block() -> None:
    with log_fields(request_id="outer"):
        with log_fields(attempt=2):
            assert dict(bound_fields()) == {"request_id": "outer", "attempt": 2}
        assert dict(bound_fields()) == {"request_id": "outer"}
    assert dict(bound_fields()) == {}
    assert "request_id" not in json.loads(JsonFormatter().format(record()))


def test_exceptions_are_kept_in_the_line() -> None:
    try:
        raise RuntimeError("broker gone")
    except RuntimeError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(rec))
    assert "RuntimeError: broker gone" in line["exc_info"] and "\n" not in JsonFormatter().format(rec)


def test_logging_config_builds_the_chosen_format() -> None:
    json_config = logging_config("debug", "json")
    assert json_config["root"]["level"] == "DEBUG" and json_config["disable_existing_loggers"] is False
    assert json_config["formatters"]["llmpulse"] == {"()": JsonFormatter}
    assert "format" in logging_config("info", "text")["formatters"]["llmpulse"]


def test_the_worker_setting_is_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmpulse.processors.settings import ProcessorSettings

    monkeypatch.delenv("LLMPULSE_LOG_FORMAT", raising=False)
    assert ProcessorSettings().log_format == "text"
    monkeypatch.setenv("LLMPULSE_LOG_FORMAT", "json")
    assert ProcessorSettings().log_format == "json"
    monkeypatch.setenv("LLMPULSE_LOG_FORMAT", "xml")
    with pytest.raises(pydantic.ValidationError):
        ProcessorSettings()


@pytest.fixture
def worker_json_lines() -> Iterator[io.StringIO]:
    with json_logs.json_lines("llmpulse.worker", logging.INFO) as stream:
        yield stream


def test_worker_alert_lines_carry_the_alert_id(worker_json_lines: io.StringIO) -> None:
    from llmpulse.processors.core.alert_policy import AlertEvent
    from llmpulse.processors.emitter import Emitter

    class Topic:
        async def send(self, **_message: Any) -> None:
            return None

    event = AlertEvent("alert-1", "fp-1", "latency_p99", "CRITICAL", "P0", "firing", "checkout", "gpt-4o", "openai",
                       "p99 4.2 s", 4.2, 2.0, "5m", 1, 2, "", None, {})
    emitter = Emitter(alerts=Topic(), dead_letter=Topic(), commands=Topic(), provider_state=Topic(), fleet=Topic(),
                      codecs=SimpleNamespace(encode_alert=lambda _e: b""),  # type: ignore[arg-type]
                      exporter=SimpleNamespace(record_alerts=lambda _e: None))  # type: ignore[arg-type]
    asyncio.run(emitter.send_alerts([event], partition=0))
    line = json.loads(worker_json_lines.getvalue())
    assert (line["alert_id"], line["fingerprint"], line["rule"]) == ("alert-1", "fp-1", "latency_p99")
    assert line["message"] == "alert firing CRITICAL latency_p99: p99 4.2 s"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_worker_hands_faust_the_json_config_only_when_asked(monkeypatch: pytest.MonkeyPatch,
                                                                 log_format: str) -> None:
    import faust

    from llmpulse.commands.worker import worker
    from llmpulse.processors import app, startup, topics

    given: dict[str, Any] = {}

    class FakeFaustWorker:
        def __init__(self, _app: Any, **options: Any) -> None:
            given.update(options)

        def execute_from_commandline(self) -> None:
            pass

    monkeypatch.setenv("LLMPULSE_LOG_FORMAT", log_format)
    monkeypatch.setattr(startup, "wait_for_kafka", lambda *_a, **_k: None)
    monkeypatch.setattr(topics, "ensure_topics", lambda *_a, **_k: None)
    monkeypatch.setattr(app, "Worker", lambda _settings: SimpleNamespace(app=None))
    monkeypatch.setattr(faust, "Worker", FakeFaustWorker)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        worker(web_port=None, web_host=None, data_dir=None, loglevel="warning")
        ours = [h for h in root.handlers if h not in handlers]
        assert len(ours) == 1 and isinstance(ours[0].formatter, JsonFormatter) is (log_format == "json")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    if log_format == "json":
        config = given["logging_config"]
        assert config["formatters"]["llmpulse"] == {"()": JsonFormatter} and config["root"]["level"] == "WARNING"
    else:
        assert "logging_config" not in given  # faust's own text logging, as before
