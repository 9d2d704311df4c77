"""Run a real ``llmpulse worker`` process against the test broker, on its own topics and port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_TOKEN = "test-token"
# The seed's global budgets ($10/h, $50/day, $500/month, a $1,000 month projection) lifted out of reach, for tests
# whose minutes of simulated traffic would otherwise also page on spend.
NO_GLOBAL_BUDGET = {
    "LLMPULSE_BUDGETS__GLOBAL_HOUR_USD": "1000000",
    "LLMPULSE_BUDGETS__GLOBAL_DAY_USD": "1000000",
    "LLMPULSE_BUDGETS__GLOBAL_MONTH_USD": "1000000",
    "LLMPULSE_BUDGETS__PROJECTION_MONTH_USD": "1000000000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WorkerProcess:
    """One worker subprocess; ``env`` also points SDKs and CLIs started by the test at the same topics."""

    bootstrap: str
    workdir: Path
    app_id: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        suffix = self.app_id
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "LLMPULSE_APP_ID": self.app_id,
            "LLMPULSE_WEB_PORT": str(self.port),
            "LLMPULSE_API_TOKEN": API_TOKEN,
            "LLMPULSE_DATA_DIR": str(self.workdir / "data"),
            "LLMPULSE_TOPIC_CALLS": f"calls-{suffix}",
            "LLMPULSE_TOPIC_ALERTS": f"alerts-{suffix}",
            "LLMPULSE_TOPIC_DEAD_LETTER": f"dlq-{suffix}",
            "LLMPULSE_TOPIC_ALERT_COMMANDS": f"commands-{suffix}",
            "LLMPULSE_TOPIC_PROVIDER_STATE": f"provider-state-{suffix}",
            "LLMPULSE_TOPIC_FLEET": f"fleet-{suffix}",
            "LLMPULSE_TOPIC_BUDGET_STATE": f"budget-state-{suffix}",
            "LLMPULSE_TOPIC_MODEL_ROUTES": f"model-routes-{suffix}",
            "LLMPULSE_TOPIC_SCHEMAS": f"schemas-{suffix}",
            "LLMPULSE_TOPIC_OTLP": f"otlp-{suffix}",  # read only with LLMPULSE_OTLP__ENABLED=true
            **self.extra_env,
        }

    def topic(self, name: str) -> str:
        return self.env[f"LLMPULSE_TOPIC_{name.upper()}"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"worker-{self.port}.log"

    def start(self, timeout: float = 60.0, answers: list[tuple[int, Any]] | None = None) -> WorkerProcess:
        """Start the worker and wait until /health/ready answers 200; ``answers`` collects every (status, body)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmpulse.cli", "worker", "--loglevel", "info"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            status, body = self.get("/health/ready")
            if answers is not None and status:
                answers.append((status, body))
            if status == 200:
                return self
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, _parse(response.read(), response.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as exc:
            return exc.code, _parse(exc.read(), exc.headers.get("Content-Type", ""))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, None

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels`` (0 when absent)."""
        _, text = self.get("/metrics")
        total = 0.0
        for line in (text or "").splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric_name = head.split("{", 1)[0]
            if metric_name != name:
                continue
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total


def _parse(raw: bytes, content_type: str) -> Any:
    if "json" in content_type:
        return json.loads(raw)
    return raw.decode(errors="replace")
