"""How every llmpulse Kafka client connects, and what it says when it cannot.

- ``client_config(bootstrap, security, ...)``: a confluent-kafka config with the security settings
  (``llmpulse.config.KafkaSecurity``) and librdkafka's own log lines routed to Python logging at DEBUG, so a
  missing broker is not hundreds of raw "Connection refused" lines on stderr.
- ``check_connection(bootstrap, security)``: ask the cluster for metadata once; ``KafkaUnavailable`` says in one
  line which servers were tried, why it failed (refused, unknown host, TLS, authentication) and what to do.

confluent-kafka is imported inside the functions: the SDK's base install has it, but importing this module costs
nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from llmpulse.config import KafkaSecurity, setting_name

START_ADVICE = ("start a local broker with `llmpulse broker start`, or set KAFKA_BOOTSTRAP_SERVERS to your "
                "cluster's address")
_SASL_ADVICE = (f"check {setting_name('sasl_username')}, {setting_name('sasl_password')} and "
                f"{setting_name('sasl_mechanism')}")
_CA_ADVICE = f"set {setting_name('ssl_ca_location')} to the CA certificate that signed the broker's certificate"


class LibrdkafkaLog:
    """librdkafka's log lines as records of one Python logger, at DEBUG (CRITICAL ones at WARNING).

    Connectivity problems reach llmpulse through ``error_cb`` and are reported once, in our words; the client's
    own line per reconnect attempt is detail for ``--loglevel debug``. confluent-kafka calls ``log(level, ...)``.
    ``failures``, when given, collects the text of its connection-failure lines (facility FAIL).
    """

    def __init__(self, name: str, failures: list[tuple[str, str]] | None = None) -> None:
        self.logger = logging.getLogger(name)
        self.failures = failures

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        self.logger.log(logging.WARNING if level >= logging.CRITICAL else logging.DEBUG, msg, *args, **kwargs)
        if self.failures is not None:
            text = msg % args if args else msg
            if text.startswith("FAIL "):
                self.failures.append(("_LOG", text))


def client_config(bootstrap: str, security: KafkaSecurity | None = None,
                  log_name: str = "llmpulse.kafka") -> dict[str, Any]:
    """The start of every confluent-kafka Producer/Consumer/AdminClient config: servers, security (from the
    environment when not given) and logging. Callers add their own properties to the dict."""
    return {"bootstrap.servers": bootstrap, **(security or KafkaSecurity.from_env()).librdkafka_config(),
            "logger": LibrdkafkaLog(log_name)}


@dataclass(frozen=True, slots=True)
class ConnectionProblem:
    """Why Kafka could not be used (``reason``) and what to change (``advice``)."""

    reason: str
    advice: str
    decisive: bool = True  # retrying with the same settings cannot help (TLS, authentication)


class KafkaUnavailable(Exception):
    """Kafka at ``bootstrap`` could not be used; ``str()`` is the one line a user reads."""

    def __init__(self, bootstrap: str, security: KafkaSecurity, problem: ConnectionProblem) -> None:
        self.bootstrap, self.security, self.problem = bootstrap, security, problem
        super().__init__(f"cannot use Kafka at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS, {security.describe()}): "
                         f"{problem.reason}; {problem.advice}")


def diagnose(errors: list[tuple[str, str]], security: KafkaSecurity) -> ConnectionProblem | None:
    """The most telling problem among librdkafka errors (``(code name, text)``, as ``error_cb`` saw them)."""
    texts = [text for _, text in errors]
    names = {name for name, _ in errors}

    def first(*needles: str) -> str | None:
        return next((text for text in texts if any(needle in text for needle in needles)), None)

    auth = next((text for name, text in errors if name == "_AUTHENTICATION"), None) or first("SASL authentication")
    if auth is not None and _detail(auth).endswith("supported mechanisms:"):  # the listener lists none
        return ConnectionProblem("the listener does not accept SASL logins",
                                 f"set {setting_name('security_protocol')} to PLAINTEXT or SSL for this listener")
    if auth is not None:
        return ConnectionProblem(f"the broker refused the SASL login ({_detail(auth)})", _SASL_ADVICE)
    tls = next((text for name, text in errors if name == "_SSL"), None) or first("SSL handshake failed")
    if tls is not None:
        if "certificate verify failed" in tls:
            return ConnectionProblem("the broker's TLS certificate is not signed by a trusted CA "
                                     "(certificate verify failed)", _CA_ADVICE)
        if any(needle in tls for needle in ("PLAINTEXT broker listener", "wrong version number", "record layer")):
            return ConnectionProblem(
                "the listener does not speak TLS",
                f"set {setting_name('security_protocol')} to PLAINTEXT or SASL_PLAINTEXT for this listener")
        return ConnectionProblem(f"the TLS handshake failed ({_detail(tls)})",
                                 f"check {setting_name('ssl_ca_location')} and the client certificate settings "
                                 f"({setting_name('ssl_certificate_location')}, {setting_name('ssl_key_location')})")
    if not security.uses_tls and first("SSL listener", "Disconnected while requesting ApiVersion",
                                       "in state APIVERSION_QUERY"):
        return ConnectionProblem(
            "the broker closed the connection during the handshake, as a TLS listener does to a plaintext client",
            f"set {setting_name('security_protocol')} to SSL or SASL_SSL (it is {security.security_protocol})")
    if not security.uses_sasl and first("SSL connection closed by peer (after", "SaslHandshake"):
        return ConnectionProblem("the listener requires a SASL login",
                                 f"set {setting_name('security_protocol')} to SASL_SSL or SASL_PLAINTEXT and "
                                 f"{setting_name('sasl_mechanism')}, {setting_name('sasl_username')}, "
                                 f"{setting_name('sasl_password')}")
    resolve = next((text for name, text in errors if name == "_RESOLVE"), None) or first("Failed to resolve")
    if resolve is not None:
        return ConnectionProblem(f"unknown host ({_detail(resolve)})", START_ADVICE, decisive=False)
    if first("Connection refused"):
        return ConnectionProblem("connection refused (nothing listens there)", START_ADVICE, decisive=False)
    if first("timed out", "Timed out"):
        return ConnectionProblem("no answer (timed out)", START_ADVICE, decisive=False)
    if "_ALL_BROKERS_DOWN" in names or texts:
        return ConnectionProblem(_detail(texts[0]) if texts else "every broker is down", START_ADVICE, decisive=False)
    return None


def _detail(text: str) -> str:
    """librdkafka's text without the ``host:port/bootstrap:`` prefix and the state suffix."""
    _, sep, rest = text.partition("/bootstrap: ")
    text = rest if sep else text
    return text.split(" (after ", 1)[0].strip()


def check_connection(bootstrap: str, security: KafkaSecurity | None = None, timeout: float = 10.0) -> None:
    """Return once the cluster answers a metadata request; else raise :class:`KafkaUnavailable`.

    Stops early when the answer cannot change (every broker down, TLS or authentication refused)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    security = security or KafkaSecurity.from_env()
    errors: list[tuple[str, str]] = []
    try:
        admin = AdminClient({**client_config(bootstrap, security, "llmpulse.kafka.check"),
                             "error_cb": lambda err: errors.append((err.name(), err.str())),
                             "logger": LibrdkafkaLog("llmpulse.kafka.check", failures=errors),
                             "socket.connection.setup.timeout.ms": int(max(timeout, 1.0) * 1000)})
    except KafkaException as exc:  # e.g. a certificate file that cannot be read
        raise KafkaUnavailable(bootstrap, security, ConnectionProblem(
            f"the Kafka client refused its settings ({exc.args[0].str()})",
            "check the KAFKA_SSL_* and KAFKA_SASL_* settings")) from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            if admin.list_topics(timeout=min(1.0, max(deadline - time.monotonic(), 0.1))).brokers:
                return
        except KafkaException as exc:
            errors.append((exc.args[0].name(), exc.args[0].str()))
        admin.poll(0)  # serves error_cb
        problem = diagnose(errors, security)
        decisive = problem is not None and (problem.decisive or any(n == "_ALL_BROKERS_DOWN" for n, _ in errors))
        if decisive or time.monotonic() >= deadline:
            raise KafkaUnavailable(bootstrap, security, problem or ConnectionProblem(
                f"no answer within {timeout:g} s", START_ADVICE))
