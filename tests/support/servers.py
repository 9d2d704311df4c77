"""Start an HTTP daemon (Prometheus, Alertmanager) as a subprocess and wait until it is ready."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


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
