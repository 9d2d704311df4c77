"""Kafka TLS/SASL settings: read once (environment, the worker's YAML file), rendered for confluent-kafka and for
faust, passwords never shown; librdkafka's errors turned into one reason and the setting to fix; the worker's
wait for Kafka."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from llmpulse.config import KafkaSecurity, KafkaSettingsError
from llmpulse.connection import ConnectionProblem, KafkaUnavailable, LibrdkafkaLog, client_config, diagnose
from llmpulse.producers import PulseSettings
from tests.support.clock import FakeClock
from tests.support.worker import free_port

SCRAM = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "svc",
         "sasl_password": "s3cret-pw"}


@pytest.fixture
def no_kafka_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD", "SSL_CA_LOCATION",
                 "SSL_CERTIFICATE_LOCATION", "SSL_KEY_LOCATION", "SSL_KEY_PASSWORD"):
        monkeypatch.delenv(f"KAFKA_{name}", raising=False)
    monkeypatch.delenv("LLMPULSE_CONFIG_FILE", raising=False)
    return monkeypatch


def test_the_environment_configures_the_sdk_and_the_cli_the_way_kafka_users_expect(no_kafka_env) -> None:
    for name, value in {"SECURITY_PROTOCOL": "sasl_ssl", "SASL_MECHANISM": "scram-sha-256",
                        "SASL_USERNAME": "svc", "SASL_PASSWORD": "s3cret-pw", "SSL_CA_LOCATION": "/ca.pem"}.items():
        no_kafka_env.setenv(f"KAFKA_{name}", value)
    config = PulseSettings().producer_config()
    assert {k: config[k] for k in ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
                                   "ssl.ca.location")} == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "svc",
        "sasl.password": "s3cret-pw", "ssl.ca.location": "/ca.pem"}
    assert "s3cret-pw" not in repr(PulseSettings()) and "s3cret-pw" not in str(KafkaSecurity.from_env())


def test_plaintext_by_default_and_tls_files_only_over_tls(no_kafka_env) -> None:
    assert KafkaSecurity.from_env().librdkafka_config() == {"security.protocol": "PLAINTEXT"}
    mtls = KafkaSecurity(security_protocol="SSL", ssl_ca_location="/ca", ssl_certificate_location="/c.pem",
                         ssl_key_location="/k.pem", ssl_key_password="kp")
    assert mtls.librdkafka_config() == {"security.protocol": "SSL", "ssl.ca.location": "/ca",
                                        "ssl.certificate.location": "/c.pem", "ssl.key.location": "/k.pem",
                                        "ssl.key.password": "kp"}


@pytest.mark.parametrize(("fields", "names"), [
    ({"security_protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
    ({**SCRAM, "sasl_mechanism": None}, "KAFKA_SASL_MECHANISM"),
    ({**SCRAM, "sasl_mechanism": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
    ({**SCRAM, "sasl_password": None}, "KAFKA_SASL_PASSWORD"),
    ({"security_protocol": "SSL", "ssl_certificate_location": "/c.pem"}, "KAFKA_SSL_KEY_LOCATION"),
])
def test_an_incomplete_setting_is_refused_by_name(fields: dict[str, str | None], names: str) -> None:
    with pytest.raises(KafkaSettingsError, match=names):
        KafkaSecurity(**{k: v for k, v in fields.items() if v is not None})


def test_the_worker_reads_the_yaml_file_and_a_variable_wins_field_by_field(no_kafka_env, tmp_path: Path) -> None:
    from llmpulse.processors.settings import ProcessorSettings

    config = tmp_path / "llmpulse.yaml"
    config.write_text("kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n  sasl_username: from-file\n"
                      "  sasl_password: file-pw\n  ssl_ca_location: /etc/kafka/ca.pem\n")
    no_kafka_env.setenv("LLMPULSE_CONFIG_FILE", str(config))
    no_kafka_env.setenv("KAFKA_SASL_PASSWORD", "env-pw")
    settings = ProcessorSettings()
    assert settings.kafka.sasl_username == "from-file" and settings.kafka.ssl_ca_location == "/etc/kafka/ca.pem"
    assert settings.kafka.sasl_password is not None and settings.kafka.sasl_password.get_secret_value() == "env-pw"
    shown = repr(settings) + settings.model_dump_json()
    assert "env-pw" not in shown and "file-pw" not in shown


def test_faust_gets_the_same_settings(tmp_path: Path) -> None:
    import faust

    from llmpulse.processors.wiring import broker_credentials

    assert broker_credentials(KafkaSecurity()) is None
    sasl = broker_credentials(KafkaSecurity(**SCRAM))
    assert isinstance(sasl, faust.SASLCredentials) and sasl.protocol.value == "SASL_SSL"
    assert (sasl.username, sasl.password, sasl.mechanism.value) == ("svc", "s3cret-pw", "SCRAM-SHA-512")
    assert isinstance(sasl.ssl_context, ssl.SSLContext) and sasl.ssl_context.check_hostname
    plain = broker_credentials(KafkaSecurity(**{**SCRAM, "security_protocol": "SASL_PLAINTEXT"}))
    assert isinstance(plain, faust.SASLCredentials) and plain.protocol.value == "SASL_PLAINTEXT"
    assert isinstance(broker_credentials(KafkaSecurity(security_protocol="SSL")), faust.SSLCredentials)


def test_librdkafka_lines_go_to_python_logging_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    config = client_config("h:9092", KafkaSecurity(), "llmpulse.test.librdkafka")
    assert isinstance(config["logger"], LibrdkafkaLog)
    with caplog.at_level("DEBUG", logger="llmpulse.test.librdkafka"):
        config["logger"].log(40, "%s", "FAIL [rdkafka#producer-1] Connection refused")
    assert [record.levelname for record in caplog.records] == ["DEBUG"]


@pytest.mark.parametrize(("errors", "security", "reason", "setting"), [
    ([("_TRANSPORT", "h:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms)"),
      ("_ALL_BROKERS_DOWN", "1/1 brokers are down")], {}, "connection refused", "llmpulse broker start"),
    ([("_RESOLVE", "nohost:9092/bootstrap: Failed to resolve 'nohost:9092': Name or service not known")], {},
     "unknown host", "KAFKA_BOOTSTRAP_SERVERS"),
    ([("_AUTHENTICATION", "SASL authentication error: Authentication failed during authentication due to invalid "
                          "credentials with SASL mechanism SCRAM-SHA-512")], SCRAM, "refused the SASL login",
     "KAFKA_SASL_PASSWORD"),
    ([("_SSL", "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed")], SCRAM,
     "not signed by a trusted CA", "KAFKA_SSL_CA_LOCATION"),
    ([("_LOG", "FAIL [rdkafka#producer-1] h:9093/bootstrap: Disconnected: connection closed by peer: receive 0 "
               "after POLLIN (after 0ms in state APIVERSION_QUERY)")], {}, "TLS listener", "KAFKA_SECURITY_PROTOCOL"),
])
def test_librdkafka_errors_become_one_reason_and_what_to_change(errors: list[tuple[str, str]],
                                                                security: dict[str, str], reason: str,
                                                                setting: str) -> None:
    problem = diagnose(errors, KafkaSecurity(**security))
    assert problem is not None and reason in problem.reason and setting in problem.advice


def test_the_worker_waits_for_kafka_saying_why_and_answering_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    from llmpulse.processors.startup import wait_for_kafka

    clock = FakeClock()
    port = free_port()
    refused = ConnectionProblem("connection refused", "start a broker", decisive=False)
    attempts: list[float] = []
    seen: list[tuple[int, dict[str, object]]] = []

    def check(bootstrap: str, security: KafkaSecurity) -> None:
        attempts.append(clock())
        if len(attempts) == 2:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5)
            except urllib.error.HTTPError as exc:
                seen.append((exc.code, json.loads(exc.read())))
        if len(attempts) < 20:
            raise KafkaUnavailable(bootstrap, security, refused)

    with caplog.at_level("INFO", logger="llmpulse.worker"):
        wait_for_kafka("k:9092", KafkaSecurity(), "127.0.0.1", port, retry_s=5, status_every_s=30, check=check,
                       clock=clock, sleep=clock.advance)
    assert len(attempts) == 20 and attempts[-1] - attempts[0] == 95
    assert seen and seen[0][0] == 503 and seen[0][1]["ready"] is False and "k:9092" in str(seen[0][1]["kafka"])
    waiting = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(waiting) == 4 and all("connection refused" in line for line in waiting)  # at 0, 30, 60 and 90 s
