"""Before faust starts: wait until Kafka answers, with a one-line status and ``/health/ready`` saying not ready;
then settle the heap for the garbage collector and keep numpy's native libraries to the worker's own thread.

faust cannot start without a broker (its consumer gives up), so it cannot serve its own health pages either.
Until Kafka answers, a small HTTP server on the worker's address answers ``/health/live`` with 200 and
``/health/ready`` (and every other path) with 503 and the reason; it stops before faust binds the same port.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from threadpoolctl import threadpool_limits

from llmpulse.config import KafkaSecurity
from llmpulse.connection import KafkaUnavailable, check_connection

log = logging.getLogger("llmpulse.worker")
# Young collections after this many new container objects (CPython's default is 700): the worker keeps about
# one more per call it absorbs, so at 700 the collector ran ~740 times in a 600k-call run.
GC_YOUNG_THRESHOLD = 10_000
STATUS_EVERY_S = 30.0  # a status line at least this often while waiting (and whenever the reason changes)
RETRY_S = 5.0


class _NotReadyServer(ThreadingHTTPServer):
    daemon_threads = True
    reason = "waiting for Kafka"


class _NotReadyHandler(BaseHTTPRequestHandler):
    server: _NotReadyServer

    def do_GET(self) -> None:
        live = self.path.split("?", 1)[0] == "/health/live"
        body = {"live": True} if live else {"ready": False, "kafka": self.server.reason}
        data = json.dumps(body).encode()
        self.send_response(200 if live else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("not-ready server: " + format, *args)


def wait_for_kafka(bootstrap: str, security: KafkaSecurity, web_host: str, web_port: int, *,
                   retry_s: float = RETRY_S, status_every_s: float = STATUS_EVERY_S,
                   check: Callable[[str, KafkaSecurity], None] | None = None,
                   clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once ``check`` (default: a metadata request) succeeds; meanwhile serve not-ready health pages and
    log why Kafka cannot be used, every ``status_every_s`` seconds or when the reason changes."""
    check = check or (lambda servers, settings: check_connection(servers, settings, timeout=retry_s))
    try:
        check(bootstrap, security)
        return
    except KafkaUnavailable as exc:
        problem = exc
    server = _NotReadyServer((web_host, web_port), _NotReadyHandler)
    thread = threading.Thread(target=server.serve_forever, name="llmpulse-not-ready", daemon=True)
    thread.start()
    began = last_said = clock()
    said = ""
    try:
        while True:
            server.reason = str(problem)
            if str(problem) != said or clock() - last_said >= status_every_s:
                log.warning("%s (waiting %.0f s so far, retrying every %g s; /health/ready answers 503)",
                            problem, clock() - began, retry_s)
                said, last_said = str(problem), clock()
            sleep(retry_s)
            try:
                check(bootstrap, security)
            except KafkaUnavailable as exc:
                problem = exc
                continue
            log.info("Kafka at %s answers; starting", bootstrap)
            return
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def settle_heap() -> None:
    """Once the worker is built: everything allocated so far (modules, the injection model, faust's app) lives as
    long as the process, so it is frozen out of the collector's reach, and young collections run less often.
    On the benchmark's traffic (600k calls, ~100 series) the collector's time fell from ~0.58 to ~0.17 s and
    its longest pause from ~110 to ~55 ms: a full collection no longer walks the startup heap. At ~10,000
    series the worker drained ~10% more (12.1k -> 13.3k calls/s, medians of three alternated runs)."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def one_native_thread() -> None:
    """numpy's native libraries (OpenBLAS for float products) compute on the calling thread only. A worker is one
    process per core, scaled by partitions and workers; OpenBLAS would otherwise start a thread per core and,
    after every large product, keep them spinning for a while, taking a core from the broker and the next worker.
    Measured before the guard's screen stopped multiplying matrices: half the CPU time of an in-process pipeline
    at ~7,700 calls per batch went to those threads (78k -> 150k calls per CPU second without them)."""
    threadpool_limits(limits=1)
