"""What makes the local broker a secured one (``llmpulse broker start --secure``): a SASL_SSL listener, SCRAM
and PLAIN users, and a CA plus broker certificate made with openssl, all kept in ``<data dir>/secure``.

Created once per data directory and reused on every start, so clients configured from the files keep working:
``ca.pem`` (the CA clients trust), ``users.json`` (user -> password, mode 0600) and one ``<user>.env`` per user
with the ``KAFKA_*`` variables a client needs. ``admin`` is the broker's own inter-broker login.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from llmpulse.config import KafkaSecurity

ADMIN = "admin"
USERS = (ADMIN, "worker", "sdk", "oncall")  # one login per role (docs/operations.md, "Kafka ACLs")
MECHANISM = "SCRAM-SHA-512"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
CERT_DAYS = 825


class SecureSetupError(RuntimeError):
    """The CA, certificates or users of the secured broker could not be created."""


@dataclass(frozen=True, slots=True)
class SecureBroker:
    """The files and users of one secured local broker."""

    directory: Path
    users: dict[str, str]  # user -> password
    key_password: str

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.directory / "broker-keystore.pem"

    def security(self, user: str = ADMIN, password: str | None = None, mechanism: str = MECHANISM) -> KafkaSecurity:
        """Client settings for ``user`` (``password`` overrides the real one, e.g. to show a refusal)."""
        return KafkaSecurity(security_protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username=user,
                             sasl_password=self.users[user] if password is None else password,
                             ssl_ca_location=str(self.ca))

    def client_env(self, user: str = ADMIN) -> dict[str, str]:
        """The ``KAFKA_*`` variables of ``user``'s clients (bootstrap servers not included)."""
        return {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": MECHANISM,
                "KAFKA_SASL_USERNAME": user, "KAFKA_SASL_PASSWORD": self.users[user],
                "KAFKA_SSL_CA_LOCATION": str(self.ca)}

    def env_file(self, user: str = ADMIN) -> Path:
        return self.directory / f"{user}.env"

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create every user for both SCRAM mechanisms."""
        return [arg for user, password in self.users.items() for mechanism in SCRAM_MECHANISMS
                for arg in ("--add-scram", f"{mechanism}=[name={user},password={password}]")]

    def server_properties(self, host: str, port: int, controller_port: int) -> dict[str, str]:
        """The broker properties that replace the plaintext listener by SASL_SSL (the controller stays local)."""
        admin = self.users[ADMIN]
        scram_login = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" ' \
                      f'password="{admin}";'
        plain_users = " ".join(f'user_{user}="{password}"' for user, password in self.users.items())
        props = {
            "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{port}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM_MECHANISMS)),
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "listener.name.sasl_ssl.plain.sasl.jaas.config":
                f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{ADMIN}" '
                f'password="{admin}" {plain_users};',
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.key.password": self.key_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca),
        }
        for mechanism in SCRAM_MECHANISMS:
            props[f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"] = scram_login
        return props


def prepare(data_dir: Path, host: str) -> SecureBroker:
    """The secured broker's CA, certificate and users under ``data_dir/secure``, created on first use."""
    directory = data_dir / "secure"
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    users_file = directory / "users.json"
    if users_file.is_file():
        saved = json.loads(users_file.read_text())
    else:
        saved = {"users": {user: secrets.token_hex(16) for user in USERS}, "key_password": secrets.token_hex(16)}
        users_file.touch(mode=0o600)
        users_file.write_text(json.dumps(saved, indent=2) + "\n")
    broker = SecureBroker(directory, dict(saved["users"]), saved["key_password"])
    if not (broker.ca.is_file() and broker.keystore.is_file()):
        _make_certificates(broker, host)
    for user in broker.users:
        env_file = broker.env_file(user)
        if not env_file.is_file():
            env_file.touch(mode=0o600)
            env_file.write_text("".join(f"export {key}={value}\n" for key, value in broker.client_env(user).items()))
    return broker


def _make_certificates(broker: SecureBroker, host: str) -> None:
    """A CA, and a broker certificate it signs for ``host`` (and localhost), its key as encrypted PKCS#8 PEM."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SecureSetupError("openssl was not found on PATH: the secured broker makes its certificates with it "
                               "(e.g. apt-get install openssl)")
    d = broker.directory
    san = f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}"
    (d / "broker.ext").write_text(f"subjectAltName={san},DNS:localhost,IP:127.0.0.1\n"
                                  "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
         "-days", str(CERT_DAYS), "-subj", "/CN=llmpulse local CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
         "-subj", f"/CN={host}"],
        ["x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "broker.crt", "-days", str(CERT_DAYS), "-extfile", "broker.ext"],
        # Kafka's PEM keystore wants the key as encrypted PKCS#8 (ssl.key.password), in a scheme Java 17 reads.
        ["pkcs8", "-topk8", "-in", "broker.key", "-out", "broker-key.p8", "-v1", "PBE-SHA1-3DES",
         "-passout", f"pass:{broker.key_password}"],
    ]
    for step in steps:
        done = subprocess.run([openssl, *step], cwd=d, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise SecureSetupError(f"openssl {step[0]} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    chain = (d / "broker-key.p8").read_text() + (d / "broker.crt").read_text() + (d / "ca.pem").read_text()
    broker.keystore.touch(mode=0o600)
    broker.keystore.write_text(chain)
    for scratch in ("ca.key", "broker.key", "broker.csr", "broker-key.p8", "broker.crt", "broker.ext", "ca.srl"):
        (d / scratch).unlink(missing_ok=True)
