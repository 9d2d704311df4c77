"""The example service's operational surface: the active-requests gauge, the agent iterations and tool-calls
histograms, request and trace ids on responses, llm_calls and JSON log lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")
import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from examples.llm_service.agent import RUNBOOKS, STOPPED
from examples.llm_service.app import ServiceConfig, create_app
from examples.llm_service.request_ids import RequestIds
from tests.support import json_logs
from tests.support.recording import RecordingPulse
from tests.support.scripted_llm import ScriptedLLM, Sleeps, completion, sample

TRACE = "0af7651916cd43dd8448eb211c80319c"


def app_for(llm: ScriptedLLM, pulse: RecordingPulse, sleeps: Sleeps, **config: Any) -> FastAPI:
    return create_app(ServiceConfig(models=("gpt-4o",), **config), pulse=pulse, http_client=llm.http_client(),
                      sleep=sleeps)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the service logs, formatted as it is in production."""
    with json_logs.json_lines("llm_service", logging.DEBUG) as stream:
        yield stream


def test_active_requests_gauge_counts_requests_in_flight(pulse: RecordingPulse, sleeps: Sleeps) -> None:
    seen: list[float] = []

    def answer(_body: dict[str, Any]) -> httpx.Response:
        seen.append(sample(app.state.service.metrics.active))
        return completion()

    llm = ScriptedLLM(answer)
    app = app_for(llm, pulse, sleeps)
    with TestClient(app) as http:
        assert sample(app.state.service.metrics.active) == 0
        assert http.post("/ask", json={"question": "restart?"}).status_code == 200
    assert seen == [1.0]  # while the LLM call was being made
    assert sample(app.state.service.metrics.active) == 0


def test_agent_histograms_observe_iterations_and_tool_calls(pulse: RecordingPulse, sleeps: Sleeps) -> None:
    llm = ScriptedLLM(
        completion(None, tool_calls=[("lookup_runbook", {"topic": "redis"}), ("lookup_runbook", {"topic": "db"})]),
        completion(None, tool_calls=[("lookup_runbook", {"topic": "oom"})]),
        completion("Ping Redis, then check pg_stat_activity."),
    )
    app = app_for(llm, pulse, sleeps)
    with TestClient(app) as http:
        body = http.post("/investigate", json={"question": "the cache and the database are slow"}).json()
    assert (body["iterations"], body["tool_calls"], body["finished"]) == (3, 3, True)
    assert body["answer"] == "Ping Redis, then check pg_stat_activity." and body["request_id"]
    metrics = app.state.service.metrics
    assert sample(metrics.agent_iterations, "_sum") == 3 and sample(metrics.agent_iterations, "_count") == 1
    assert sample(metrics.agent_iterations, "_bucket", le="2.0") == 0
    assert sample(metrics.agent_iterations, "_bucket", le="3.0") == 1
    assert sample(metrics.agent_tool_calls, "_sum") == 3
    assert sample(metrics.agent_tool_calls, "_bucket", le="2.0") == 0
    assert sample(metrics.agent_tool_calls, "_bucket", le="3.0") == 1
    # The tools ran: the second request carries both runbooks as tool messages, and every call is "investigate".
    tool_messages = [m for m in llm.bodies[1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [RUNBOOKS["redis"], RUNBOOKS["db"]]
    assert all(b["tools"][0]["function"]["name"] == "lookup_runbook" for b in llm.bodies)
    assert [c["feature"] for c in pulse.calls] == ["investigate"] * 3
    assert [c["labels"]["attempt"] for c in pulse.calls] == ["1"] * 3
    assert body["cost_usd"] == pytest.approx(3 * (10 * 2.5 + 5 * 10.0) / 1e6)


def test_an_agent_that_never_stops_asking_is_stopped(pulse: RecordingPulse, sleeps: Sleeps) -> None:
    loop = completion(None, tool_calls=[("lookup_runbook", {"topic": "crash"})])
    llm = ScriptedLLM(*[loop] * 2)
    app = app_for(llm, pulse, sleeps, agent_max_iterations=2)
    with TestClient(app) as http:
        body = http.post("/investigate", json={"question": "?"}).json()
    assert (body["iterations"], body["tool_calls"], body["finished"]) == (2, 2, False)
    assert body["answer"] == STOPPED.format(n=2)
    assert sample(app.state.service.metrics.agent_iterations, "_bucket", le="2.0") == 1


def test_request_ids_are_kept_when_sane_and_made_otherwise() -> None:
    ids = RequestIds.from_headers({"x-request-id": "abc-123", "traceparent": f"00-{TRACE}-b7ad6b7169203331-01"})
    assert (ids.request_id, ids.trace_id) == ("abc-123", TRACE)
    assert len(ids.span_id) == 16 and ids.span_id != "b7ad6b7169203331"
    made = RequestIds.from_headers({"x-request-id": "bad id\n{}", "traceparent": f"00-{'0' * 32}-b7ad6b7169203331-01"})
    assert len(made.request_id) == 16 and made.request_id != "bad id\n{}"
    assert len(made.trace_id) == 32 and made.trace_id != "0" * 32
    assert RequestIds.from_headers({}).trace_id != RequestIds.from_headers({}).trace_id


def test_json_log_lines_carry_the_request_and_trace_ids(pulse: RecordingPulse, sleeps: Sleeps,
                                                        json_lines: io.StringIO) -> None:
    llm = ScriptedLLM(completion("Roll back."))
    app = app_for(llm, pulse, sleeps)
    with TestClient(app) as http:
        response = http.post("/ask", json={"question": "deploy broke"},
                             headers={"X-Request-ID": "r-1", "traceparent": f"00-{TRACE}-b7ad6b7169203331-01"})
        http.post("/ask", json={"question": "deploy broke"})
    assert response.headers["X-Request-ID"] == "r-1" and response.headers["X-Trace-ID"] == TRACE
    assert response.json()["request_id"] == "r-1"
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    answered, request, cached, second_request = lines
    assert answered["message"] == "answered" and answered["model"] == "gpt-4o" and answered["cached"] is False
    assert request["message"] == "POST /ask 200" and request["status"] == 200 and request["duration_ms"] >= 0
    for line in (answered, request):
        assert (line["request_id"], line["trace_id"], line["logger"]) == ("r-1", TRACE, "llm_service")
    assert cached["cached"] is True and cached["cost_usd"] == 0.0
    assert cached["request_id"] == second_request["request_id"] != "r-1"
    assert pulse.calls[0]["trace_id"] == TRACE and pulse.calls[1]["trace_id"] == cached["trace_id"]
    assert pulse.calls[1]["labels"] == {"request_id": cached["request_id"]}
