"""A worker whose state writer failed ends its process even when faust's graceful stop never returns.

faust's stop can wait for good on a stream sought back during the crash (tests/reliability/test_state_write_failure
hit it about once in ten runs); a worker left alive but doing nothing is never restarted. Here the app's loop never
runs at all, the strongest form of a stop that hangs: the exit must come from the worker's own timer."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from llmpulse.processors import app as worker_app
from llmpulse.processors.app import FAILED_STOP_EXIT_CODE, Worker
from llmpulse.processors.changelog_writer import ChangelogFailed
from llmpulse.processors.settings import ProcessorSettings


def test_a_worker_whose_stop_hangs_after_its_state_writer_failed_exits_with_its_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    exited = threading.Event()
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    monkeypatch.setattr(worker_app, "FAILED_STOP_EXIT_S", 0.05)
    monkeypatch.setattr(worker_app.os, "_exit", fake_exit)
    worker = Worker(ProcessorSettings(bootstrap_servers="127.0.0.1:1", data_dir=tmp_path))  # nothing connects
    with caplog.at_level(logging.CRITICAL):
        worker._changelog_failed(ChangelogFailed("Broker: Message size too large"))  # as the delivery thread calls it
        assert exited.wait(5.0), "the worker never exited while its graceful stop hung"
    assert codes == [FAILED_STOP_EXIT_CODE]
    assert any(record.levelno == logging.CRITICAL and "state writer failed" in record.getMessage()
               for record in caplog.records)
