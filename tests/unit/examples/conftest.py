"""Fixtures for the example service's tests: a recording Pulse and a sleep that waits for nothing. The test modules
skip themselves when fastapi or openai (the ``instrument`` extra) is missing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.recording import RecordingPulse


@pytest.fixture
def pulse() -> RecordingPulse:
    return RecordingPulse()


@pytest.fixture
def sleeps() -> Any:
    from tests.support.scripted_llm import Sleeps

    return Sleeps()
