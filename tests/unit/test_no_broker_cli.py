"""Every command, run as a new user would with no broker (and no worker) there: one line on stderr naming the
address it tried and what to do, a non-zero exit code, no traceback, none of librdkafka's own lines; the worker
waits instead, with a status line and /health/ready answering 503."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.waiting import wait_until
from tests.support.worker import free_port

NOTHING = f"127.0.0.1:{free_port()}"  # a port nothing listens on
KAFKA_ADVICE = ("llmpulse broker start", "KAFKA_BOOTSTRAP_SERVERS")
WORKER_ADVICE = ("llmpulse worker", "--url")
COMMANDS = {
    "simulate": (["simulate", "--duration", "1", "--fast", "--json"], NOTHING, KAFKA_ADVICE),
    "alerts tail": (["alerts", "tail", "--timeout", "5"], NOTHING, KAFKA_ADVICE),
    "alerts forward": (["alerts", "forward", "--webhook", f"http://{NOTHING}/hook", "--timeout", "5"], NOTHING,
                       KAFKA_ADVICE),
    "export": (["export", "calls", "--since", "1h"], NOTHING, KAFKA_ADVICE),
    "import": (["import", "{calls_file}"], NOTHING, KAFKA_ADVICE),
    "dead-letter show": (["dead-letter", "show"], NOTHING, KAFKA_ADVICE),
    "dead-letter replay": (["dead-letter", "replay"], NOTHING, KAFKA_ADVICE),
    "acls --apply": (["acls", "--apply"], NOTHING, KAFKA_ADVICE),
    "alerts ack": (["alerts", "ack", "some-id", "--token", "t", "--url", f"http://{NOTHING}"], NOTHING,
                   WORKER_ADVICE),
    "report": (["report", "day", "--url", f"http://{NOTHING}"], NOTHING, WORKER_ADVICE),
}


def _env(tmp_path: Path) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LLMPULSE_"))}
    return {**kept, "KAFKA_BOOTSTRAP_SERVERS": NOTHING, "LLMPULSE_DATA_DIR": str(tmp_path / "data"),
            "COLUMNS": "400"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every command run at once (they mostly wait), each with its own result."""
    tmp_path = tmp_path_factory.mktemp("no-broker")
    calls_file = tmp_path / "calls.jsonl"
    calls_file.write_text(json.dumps({"timestamp_ms": 1, "provider": "openai", "request_model": "gpt-4o",
                                      "latency_ms": 10.0}) + "\n")
    started = {
        name: subprocess.Popen([sys.executable, "-m", "llmpulse.cli",
                                *(arg.format(calls_file=calls_file) for arg in args)],
                               env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (args, _, _) in COMMANDS.items()
    }
    results = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=60)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results


@pytest.mark.parametrize("command", list(COMMANDS))
def test_without_a_broker_a_command_says_what_it_tried_and_what_to_do(
        finished: dict[str, subprocess.CompletedProcess[str]], command: str) -> None:
    result = finished[command]
    _, address, advice = COMMANDS[command]
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert address in lines[0] and all(words in lines[0] for words in advice), lines[0]
    assert "refused" in lines[0]


@pytest.fixture
def waiting_worker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    env = {**_env(tmp_path), "LLMPULSE_WEB_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "-m", "llmpulse.cli", "worker"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=tmp_path, start_new_session=True)
    try:
        yield process, port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def _ready(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


def test_without_a_broker_the_worker_waits_not_ready_with_a_one_line_status(
        waiting_worker: tuple[subprocess.Popen[str], int]) -> None:
    process, port = waiting_worker
    status, body = wait_until(lambda: _ready(port)[0] and _ready(port), timeout=30, step=0.3)
    assert status == 503 and body["ready"] is False and NOTHING in str(body["kafka"])
    time.sleep(1.0)  # still there, still waiting
    assert process.poll() is None
    os.killpg(process.pid, signal.SIGTERM)
    output = process.communicate(timeout=10)[0]
    assert "Traceback" not in output and "rdkafka" not in output
    status_lines = [line for line in output.splitlines() if NOTHING in line]
    assert len(status_lines) == 1, output  # one line per reason change or 30 s, not one per reconnect
    assert all(words in status_lines[0] for words in KAFKA_ADVICE) and "connection refused" in status_lines[0]
