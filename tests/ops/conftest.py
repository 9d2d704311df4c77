"""Fixtures for ops tests that run the real thing: worker processes, Alertmanager, Prometheus."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.worker import WorkerProcess, free_port

TOOLS_BIN = Path.home() / ".cache" / "llmpulse" / "tools" / "bin"


def binary(*names: str) -> str:
    """Path of the first of ``names`` on PATH or in the ops tools dir; skips the test when none is installed."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path=str(TOOLS_BIN))
        if found:
            return found
    pytest.skip(f"{names[0]} not installed: run scripts/install-ops-tools.sh")


@dataclass
class Server:
    """A started HTTP daemon: its base URL and log file."""

    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_server(argv: list[str], url: str, log: Path, ready_path: str = "/-/ready",
                 timeout: float = 30.0) -> Server:
    """Start ``argv`` and wait until ``url + ready_path`` answers 200."""
    process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=log.parent)
    server = Server(url, log, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(url + ready_path, timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    stop_server(server)
    raise TimeoutError(f"{argv[0]} not ready after {timeout} s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Server]:
    """Alertmanager (Debian package) with deploy/alertmanager/alertmanager.yml, clustering off."""
    exe = binary("prometheus-alertmanager", "alertmanager")
    config = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"
    port = free_port()
    workdir = tmp_path / "alertmanager"
    workdir.mkdir()
    server = start_server(
        [exe, f"--config.file={config}", f"--storage.path={workdir}", f"--web.listen-address=127.0.0.1:{port}",
         "--cluster.listen-address="],
        f"http://127.0.0.1:{port}", workdir / "alertmanager.log",
    )
    yield server
    stop_server(server)


@pytest.fixture
def worker_factory(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers (``make(**extra_env)``) on their own topics and port; all stopped after the test."""
    started: list[WorkerProcess] = []

    def make(start: bool = True, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(kafka_bootstrap, tmp_path / f"w{len(started)}", extra_env=extra_env)
        started.append(worker)
        return worker.start() if start else worker

    yield make
    for worker in started:
        worker.stop()
