"""The example service answers 429 with Retry-After on an exhausted budget and 400 on a blocked prompt, from the
SDK's decisions; the fake API receives neither request."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from examples.llm_service.app import ServiceConfig, create_app
from llmpulse.producers import AdmissionSettings, Pulse
from tests.instrumentation.test_preflight import INJECTION, exhaust


def test_429_with_retry_after_and_400(fake_api: Any) -> None:
    settings = AdmissionSettings(mode="enforce", max_state_age_s=60, fail_closed=False)
    pulse = Pulse(service="llm-service", bootstrap_servers="127.0.0.1:1", admission=settings, guard="block")
    try:
        app = create_app(ServiceConfig(base_url=fake_api.openai_base_url, models=("gpt-4o",)), pulse=pulse)
        with TestClient(app) as http:
            assert http.post("/ask", json={"question": "What is 2+2?", "user": "u-1"}).status_code == 200
            before = len(fake_api.requests)
            blocked = http.post("/ask", json={"question": INJECTION})
            assert blocked.status_code == 400 and "injection" in blocked.json()["detail"]
            exhaust(pulse, "service", "llm-service")
            over = http.post("/ask", json={"question": "And 3+3?", "user": "u-1"})
            assert over.status_code == 429
            assert 3500 <= int(over.headers["Retry-After"]) <= 3600
            assert "service llm-service day" in over.json()["detail"]
            assert len(fake_api.requests) == before
    finally:
        pulse.close(0.1)
