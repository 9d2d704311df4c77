"""A real ``llmpulse worker`` subprocess on benchmark topics, watched through its /metrics endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.worker import WorkerProcess

PROCESSED = "llmpulse_events_processed_total"


def fleet_topic(tag: str, app_id: str) -> str:
    """The worker's fleet topic: one summary record per calls record it processed, stamped at send time."""
    return f"fleet-{tag}-{app_id}"


def launch(bootstrap: str, workdir: Path, app_id: str, calls_topic: str, tag: str,
           extra_env: dict[str, str] | None = None) -> WorkerProcess:
    """Start a worker without waiting for readiness: the caller times everything from this moment."""
    worker = WorkerProcess(bootstrap, workdir, app_id=app_id, extra_env={
        "LLMPULSE_TOPIC_CALLS": calls_topic,
        # Its own fleet topic: the default one is shared by every worker on the broker.
        "LLMPULSE_TOPIC_FLEET": fleet_topic(tag, app_id),
        **(extra_env or {}),
    })
    workdir.mkdir(parents=True, exist_ok=True)
    log = worker.log_path.open("ab")
    worker.process = subprocess.Popen(
        [sys.executable, "-m", "llmpulse.cli", "worker", "--loglevel", "warning"],
        env=worker.env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
    )
    return worker


def processed(worker: WorkerProcess) -> float | None:
    """Calls the worker has processed, or None while its web server is not answering yet."""
    status, text = worker.get("/metrics")
    if status != 200:
        return None
    return worker.metric(PROCESSED) if PROCESSED in (text or "") else 0.0


def calls_partitions(worker: WorkerProcess) -> set[int] | None:
    """The calls partitions whose engines the worker holds now (/api/budgets), or None while it does not answer."""
    status, body = worker.get("/api/budgets")
    if status != 200 or not isinstance(body, dict):
        return None
    return {int(key) for key in body["partitions"] if key.isdigit()}  # OTLP lanes are "otlp:<n>"


def scrape_costs(worker: WorkerProcess, scrapes: int) -> list[tuple[float, float, int]]:
    """``scrapes`` GETs of /metrics one after the other: (wall seconds, the worker's CPU seconds, bytes) of each.
    The page is computed and written on the worker's event loop, so its wall time is time no call is processed."""
    costs = []
    for _ in range(scrapes):
        cpu, began = cpu_seconds(worker), time.perf_counter()
        request = urllib.request.Request(worker.url + "/metrics")
        with urllib.request.urlopen(request, timeout=60) as response:
            size = len(response.read())
        wall, after = time.perf_counter() - began, cpu_seconds(worker)
        costs.append((wall, after - cpu if after is not None and cpu is not None else float("nan"), size))
    return costs


def wait_ready(worker: WorkerProcess, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process is not None and worker.process.poll() is not None:
            raise RuntimeError(f"worker exited:\n{worker.log_tail()}")
        if worker.get("/health/ready")[0] == 200:
            return
        time.sleep(0.2)
    raise TimeoutError(f"worker not ready after {timeout} s:\n{worker.log_tail()}")


def cpu_seconds(worker: WorkerProcess) -> float | None:
    """CPU time (user + system) the worker process has used, from /proc/<pid>/stat (Linux); None elsewhere."""
    if worker.process is None:
        return None
    try:
        stat = Path(f"/proc/{worker.process.pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def preemptions(worker: WorkerProcess) -> int | None:
    """Times the worker's main thread was taken off a core while it could have run on (its nonvoluntary context
    switches, /proc/<pid>/status); None elsewhere."""
    value = _status_field(worker, "nonvoluntary_ctxt_switches")
    return None if value is None else int(value.split()[0])


def machine_busy_seconds() -> float | None:
    """CPU seconds every core of the machine has spent busy (not idle or waiting on I/O), from /proc/stat."""
    try:
        head = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    ticks = [int(value) for value in head[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def rss_mb(worker: WorkerProcess) -> float | None:
    """Resident set size of the worker process from /proc (Linux); None elsewhere."""
    value = _status_field(worker, "VmRSS")
    return None if value is None else int(value.split()[0]) / 1024.0


def _status_field(worker: WorkerProcess, name: str) -> str | None:
    """The value of one line of the worker process's /proc/<pid>/status; None where there is none."""
    if worker.process is None:
        return None
    try:
        status = Path(f"/proc/{worker.process.pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    return None
