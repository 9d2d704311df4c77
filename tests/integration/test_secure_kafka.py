"""Over SASL_SSL (SCRAM users, a local CA): SDK -> worker -> alerts topic -> ``llmpulse alerts tail``, and every
misconfiguration refused in one line that names the setting to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmpulse.config import KafkaSecurity
from llmpulse.connection import KafkaUnavailable, check_connection
from llmpulse.producers import Pulse
from tests.support.cli import run_cli
from tests.support.secure_kafka import SecuredKafka, first_alert, send_slow_calls
from tests.support.worker import WorkerProcess

pytestmark = pytest.mark.timeout(180)


def test_calls_reach_alerts_tail_over_sasl_ssl(secure_kafka: SecuredKafka, tmp_path: Path) -> None:
    worker = WorkerProcess(secure_kafka.bootstrap, tmp_path / "worker", extra_env=secure_kafka.env("worker"))
    worker.start()
    try:
        sdk = secure_kafka.files.security("sdk", mechanism="SCRAM-SHA-256")
        with Pulse(service="checkout", bootstrap_servers=secure_kafka.bootstrap, kafka=sdk,
                   topic=worker.topic("calls"), linger_ms=20) as pulse:
            send_slow_calls(pulse)
        record = first_alert(secure_kafka, worker, timeout=60)
    finally:
        worker.stop()
    assert (record["kind"], record["rule"], record["service"]) == ("alert", "latency_p95", "checkout")
    assert secure_kafka.files.users["worker"] not in worker.log_tail(500)  # the password is never logged


def test_a_wrong_password_is_refused_in_one_line_naming_the_setting(secure_kafka: SecuredKafka) -> None:
    tail = run_cli("alerts", "tail", "--timeout", "5", env=secure_kafka.env("oncall", KAFKA_SASL_PASSWORD="wrong"),
                   timeout=60)
    assert tail.returncode == 1
    assert "Traceback" not in tail.stderr + tail.stdout
    lines = tail.stderr.strip().splitlines()
    assert len(lines) == 1, tail.stderr
    assert secure_kafka.bootstrap in lines[0] and "refused the SASL login" in lines[0]
    assert "KAFKA_SASL_PASSWORD" in lines[0] and "wrong" not in lines[0]


@pytest.mark.parametrize(("change", "says", "names"), [
    ({"ssl_ca_location": None}, "not signed by a trusted CA", "KAFKA_SSL_CA_LOCATION"),
    ({"security_protocol": "PLAINTEXT"}, "as a TLS listener does to a plaintext client", "KAFKA_SECURITY_PROTOCOL"),
    ({"security_protocol": "SSL"}, "requires a SASL login", "KAFKA_SECURITY_PROTOCOL"),
    ({"sasl_mechanism": "SCRAM-SHA-256", "sasl_password": "nope"}, "refused the SASL login", "KAFKA_SASL_PASSWORD"),
])
def test_each_misconfiguration_names_its_setting(secure_kafka: SecuredKafka, change: dict[str, str | None],
                                                 says: str, names: str) -> None:
    fields = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "sdk",
              "sasl_password": secure_kafka.files.users["sdk"], "ssl_ca_location": str(secure_kafka.files.ca)}
    fields.update(change)
    if fields["security_protocol"] in ("PLAINTEXT", "SSL"):
        fields = {k: v for k, v in fields.items() if not k.startswith("sasl_")}
    with pytest.raises(KafkaUnavailable) as refused:
        check_connection(secure_kafka.bootstrap, KafkaSecurity(**fields), timeout=10)
    assert says in str(refused.value) and names in str(refused.value)
    assert secure_kafka.files.users["sdk"] not in str(refused.value)
