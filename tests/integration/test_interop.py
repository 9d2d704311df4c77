"""JSON Lines in and out of Kafka through the CLI, and the usage report from a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmpulse.producers.batching import DEFAULTS
from tests.support.waiting import wait_until
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(240)
NOW = int(time.time() * 1000)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "llmpulse.cli", *args], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def _env(bootstrap: str) -> dict[str, str]:
    import os

    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}


def _call(i: int, **fields: Any) -> dict[str, Any]:
    call = {
        "event_id": uuid.uuid4().hex, "timestamp_ms": NOW - 20 * 60_000 + i * 100, "service": f"svc-{i % 3}",
        "provider": "openai", "request_model": ("gpt-4o", "gpt-4o-mini")[i % 2], "status": "ok",
        "latency_ms": 100.0 + i, "input_tokens": 50 + i, "output_tokens": 20, "cost_micros": 1000 + i,
        "user_hash": f"u{i % 5}" if i % 4 else None, "labels": {"team": "a"} if i % 10 == 0 else {},
        "confidence": 0.5 if i % 2 else None, "prompt_text": "hello there" if i % 7 == 0 else None,
    }
    call.update(fields)
    return call


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _read(path: Path) -> dict[str, dict[str, Any]]:
    return {row["event_id"]: row for row in map(json.loads, path.read_text().splitlines())}


def test_import_then_export_gives_back_the_same_calls(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"interop-{uuid.uuid4().hex[:8]}"
    calls = [_call(i) for i in range(1200)]
    seed_line = {"timestamp": datetime.fromtimestamp(NOW / 1000 - 60, UTC).isoformat(), "request_id": "ab-cd",
                 "provider": "anthropic", "model": "claude-3-5-sonnet", "latency_ms": 812.5,
                 "tokens": {"input": 150, "output": 200, "total": 350}, "cost_usd": 0.021, "success": False,
                 "error": "Timeout", "metadata": {"experiment_id": "exp", "variant_id": "b"}, "prompt_length": 50}
    source = _write(tmp_path / "in.jsonl", [*calls, "not json", {"provider": "x"}, seed_line])
    env = _env(kafka_bootstrap)

    imported = _cli("import", str(source), "--topic", topic, "--batch-size", "500", env=env)
    assert "imported 1201 calls" in imported.stderr and "2 line(s) skipped" in imported.stderr
    assert "line 1201" in imported.stderr and "line 1202: 'missing timestamp_ms'" in imported.stderr

    out = tmp_path / "out.jsonl"
    _cli("export", "calls", "--topic", topic, "--since", "1h", "-o", str(out), env=env)
    exported = _read(out)
    assert len(exported) == 1201
    for call in calls:
        expected = {**DEFAULTS, **call}
        expected["labels"] = call["labels"] or {}
        assert exported[call["event_id"]] == expected
    seed = exported["abcd"]
    assert (seed["service"], seed["request_model"], seed["status"], seed["error_type"]) == (
        "imported", "claude-3-5-sonnet", "error", "Timeout")
    assert (seed["input_tokens"], seed["output_tokens"], seed["cost_micros"]) == (150, 200, 21_000)
    assert (seed["experiment_id"], seed["variant"], seed["prompt_chars"]) == ("exp", "b", 50)


def test_export_keeps_only_the_requested_time_range(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"interop-{uuid.uuid4().hex[:8]}"
    calls = [_call(i, timestamp_ms=NOW - (100 - i) * 60_000) for i in range(100)]  # one a minute, last 100 min
    env = _env(kafka_bootstrap)
    _cli("import", str(_write(tmp_path / "in.jsonl", calls)), "--topic", topic, env=env)
    start, end = NOW - 30 * 60_000 - 30_000, NOW - 10 * 60_000 + 30_000  # between two calls
    out = tmp_path / "range.jsonl"
    _cli("export", "calls", "--topic", topic, "--since", _iso(start), "--until", _iso(end).replace("+00:00", "Z"),
         "-o", str(out), env=env)
    got = sorted(row["timestamp_ms"] for row in _read(out).values())
    assert got == [c["timestamp_ms"] for c in calls if start <= c["timestamp_ms"] < end]
    assert len(got) == 21


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def test_worker_report_token_alert_and_alert_export(worker: WorkerProcess, tmp_path: Path) -> None:
    # 60 calls averaging 1117 tokens: over the 500-token average limit (seed 004's token limiter), which is
    # informational (INFO, P3) unless LLMPULSE_TRAFFIC__TOKEN_AVERAGE_WARNING sets a warning limit.
    heavy = [_call(i, service="chat", request_model="gpt-4o", input_tokens=1500, output_tokens=100,
                   cost_micros=None, status="error" if i < 6 else "ok") for i in range(40)]
    easy = [_call(i, service="chat", request_model="gpt-4o", input_tokens=100, output_tokens=50, cost_micros=None)
            for i in range(40, 60)]
    _cli("import", str(_write(tmp_path / "in.jsonl", heavy + easy)), "--topic", worker.topic("calls"),
         "--shift-to-now", env=worker.env)

    alerts = tmp_path / "alerts.jsonl"

    def token_alert() -> list[dict[str, Any]]:
        _cli("export", "alerts", "--topic", worker.topic("alerts"), "--since", "1h", "-o", str(alerts),
             env=worker.env)
        return [a for a in _read_alerts(alerts) if a["kind"] == "alert" and a["rule"] == "token_average"]

    (alert,) = wait_until(token_alert, 60)
    assert alert["service"] == "chat" and (alert["severity"], alert["priority"]) == ("INFO", "P3")
    assert alert["observed"] == pytest.approx((40 * 1600 + 20 * 150) / 60)

    def report() -> dict[str, Any]:
        out = _cli("report", "day", "--url", worker.url, "--format", "json", env=worker.env).stdout
        data = json.loads(out)
        return data if data["totals"]["requests"] == 60 else {}

    data = wait_until(report, 60)
    assert data["totals"]["errors"] == 6 and data["totals"]["input_tokens"] == 40 * 1500 + 20 * 100
    assert data["models"][0]["model"] == "gpt-4o" and data["totals"]["cost_usd"] > 0
    assert data["alerts"]["by_rule"].get("token_average") == 1
    assert data.get("savings"), f"the report has no savings (PartitionEngine's SavingsTracker): {sorted(data)}"
    (chat,) = data["savings"]
    assert chat["easy_calls"] == 20 and chat["target"] == "openai/gpt-4o"  # only one model seen: no saving
    assert chat["savings_usd"] == 0
    text = _cli("report", "day", "--url", worker.url, "--format", "markdown", env=worker.env).stdout
    assert "## Top models by cost" in text and "| gpt-4o | openai | 60 |" in text
    assert worker.metric("llmpulse_routing_easy_ratio", service="chat", period="day") == pytest.approx(20 / 60)


def _read_alerts(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_imported_feedback_joins_its_imported_calls_in_the_worker(worker: WorkerProcess, tmp_path: Path) -> None:
    calls = [_call(i, service="reviewed", request_model="gpt-4o", timestamp_ms=NOW - 60_000 + i * 1000,
                   cost_micros=None) for i in range(40)]
    verdicts = [{"request_id": call["event_id"], "correct": i % 4 != 0, "source": "review",
                 "timestamp_ms": NOW - 10_000} for i, call in enumerate(calls)]  # 30 of 40 correct
    malformed = {"request_id": "x", "rating": 9}
    source = _write(tmp_path / "reviewed.jsonl", [*calls, *verdicts, malformed])
    imported = _cli("import", str(source), "--topic", worker.topic("calls"), "--shift-to-now", env=worker.env)
    assert "imported 40 calls and 40 feedback" in imported.stderr and "1 line(s) skipped" in imported.stderr
    assert "line 81: feedback needs exactly one of" in imported.stderr

    def quality() -> dict[str, Any] | None:
        _, summary = worker.get("/api/metrics")
        rows = [row for row in summary.get("health", []) if row["service"] == "reviewed"]
        return rows[0]["components"]["quality"] if rows and rows[0]["components"]["quality"] else None

    joined = wait_until(quality, 60)
    assert joined["measured"]["accuracy"] == pytest.approx(0.75)
