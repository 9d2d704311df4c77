"""Quality drop, end to end: simulator (calls + feedback) -> real broker -> real worker -> a quality alert that
names the version and the one to roll back to; with rollback turned on, a route-back decision the SDK follows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from llmpulse.producers.routes import ModelRoutes
from llmpulse.schemas.alerts_topic import AlertsTopicCodec
from tests.support.kafka import read_topic
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(240)
QUALITY = {
    "LLMPULSE_QUALITY__WINDOW_S": "30",
    "LLMPULSE_QUALITY__REFERENCE_S": "60",
    "LLMPULSE_QUALITY__SLOT_S": "5",
    "LLMPULSE_QUALITY__MIN_RATINGS": "30",
    "LLMPULSE_QUALITY__MIN_VERSION_RATINGS": "30",
    "LLMPULSE_QUALITY__ROLLBACK_ENABLED": "true",
}


def test_quality_drop_alert_names_the_version_and_the_rollback_and_routes_back(
        kafka_bootstrap: str, tmp_path: Any) -> None:
    worker = WorkerProcess(kafka_bootstrap, tmp_path, extra_env=QUALITY)
    worker.extra_env["LLMPULSE_TOPIC_MODEL_ROUTES"] = f"routes-{worker.app_id}"
    worker.start(timeout=120)
    routes = ModelRoutes("support-bot", kafka_bootstrap, topic=worker.topic("model_routes"))
    try:
        sim = subprocess.run(
            [sys.executable, "-m", "llmpulse.cli", "simulate", "--fast", "--json", "--seed", "7", "--rate", "50",
             "--duration", "180", "--scenario", "quality-drop"],
            env=worker.env, capture_output=True, timeout=150)
        assert sim.returncode == 0, sim.stderr.decode(errors="replace")[-2000:]
        assert json.loads(sim.stdout)["sdk"]["dropped_encoding"] == 0
        alerts = _firing_quality_alerts(worker, timeout=90)
        assert alerts, f"no quality alert; worker log:\n{worker.log_tail()}"
        alert = alerts[0]
        assert alert["service"] == "support-bot" and alert["labels"]["version"].endswith("@v2")
        assert alert["labels"]["rollback_to"].endswith("@v1")
        assert "roll back to" in alert["summary"] and alert["labels"]["rollback_to"] in alert["mitigation"]

        deadline = time.monotonic() + 30
        while routes.decision is None and time.monotonic() < deadline:
            time.sleep(0.5)
        model = alert["labels"]["version"].split("@")[0]
        assert routes.choose(model, "v2") == (model, "v1")
        assert routes.choose(model, "v1") == (model, "v1")  # already on the good version: unchanged
    finally:
        routes.close()
        worker.stop()


def _firing_quality_alerts(worker: WorkerProcess, timeout: float) -> list[dict[str, Any]]:
    codec = AlertsTopicCodec()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = read_topic(worker.bootstrap, worker.topic("alerts"), until=lambda _v: False, timeout=2,
                             decode=codec.decode)
        found = [r for kind, r in records if kind == "alert" and r["rule"] in ("quality_drop", "concept_drift")
                 and r["status"] == "firing"]
        if found:
            return found
        time.sleep(2)
    return []
