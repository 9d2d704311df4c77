"""A real single-node Apache Kafka broker (KRaft, broker+controller in one JVM) for development and tests.

The jars come from Maven Central through ``mvn`` (so only a JDK and Maven are needed, no tarball download) and
are cached per Kafka version; each broker keeps its config, logs, pid file and data in its own data directory.
The broker runs detached in its own session, so it outlives the command that started it. ``secure=True`` gives
it a SASL_SSL listener with SCRAM users and its own CA instead of the plaintext one (llmpulse/broker_security.py).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmpulse.broker_acls import apply as apply_acls
from llmpulse.broker_acls import authorizer_properties
from llmpulse.broker_security import ADMIN, SecureBroker, SecureSetupError, prepare
from llmpulse.config import KafkaSecurity

KAFKA_VERSION = "4.3.1"
# Kafka 4.x logs through log4j2; its jars pull slf4j-api 1.7.x, bound by log4j-slf4j-impl (not slf4j2-impl).
LOG4J_VERSION = "2.25.4"
MIN_JAVA = 17
_MARKER = ".complete"
_PID_FILE = "broker.pid"
_LOG_FILE = "broker.log"  # log4j2 output: the broker's own log
_CONSOLE_FILE = "console.log"  # JVM stdout/stderr: crashes before log4j2 is up land here


class BrokerError(RuntimeError):
    """The local broker could not be installed, started or stopped; the message says what to do."""


def _default_home(version: str) -> Path:
    return Path.home() / ".cache" / "llmpulse" / f"kafka-{version}"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Where the broker's jars and data live and how it listens. The controller takes ``port + 1``."""

    version: str = KAFKA_VERSION
    home: Path = field(default_factory=lambda: _default_home(KAFKA_VERSION))
    data_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "llmpulse" / "broker-9092")
    host: str = "127.0.0.1"
    port: int = 9092
    num_partitions: int = 3
    heap: str = "512m"
    start_timeout: float = 60.0
    stop_timeout: float = 30.0
    # C1-only JIT starts ~2 s sooner on 2 cores; turn it off for throughput benchmarks.
    quick_jit: bool = True
    secure: bool = False  # SASL_SSL with SCRAM users and a local CA instead of PLAINTEXT
    acls: bool = False  # with secure: StandardAuthorizer and the least-privilege ACLs of broker_acls.py

    @property
    def controller_port(self) -> int:
        return self.port + 1

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @classmethod
    def from_env(
        cls, port: int | None = None, data_dir: Path | None = None, **overrides: object
    ) -> BrokerConfig:
        """Defaults for the CLI: ``LLMPULSE_BROKER_HOME`` and ``LLMPULSE_BROKER_PORT`` override the built-ins.

        The data directory defaults to one per port, so brokers on different ports never share a log.
        """
        home = Path(os.environ.get("LLMPULSE_BROKER_HOME", _default_home(KAFKA_VERSION))).expanduser()
        port = port if port is not None else int(os.environ.get("LLMPULSE_BROKER_PORT", "9092"))
        suffix = "-secure" if overrides.get("secure") else ""  # a plaintext log has no SCRAM users: never share
        data = data_dir or Path.home() / ".cache" / "llmpulse" / f"broker-{port}{suffix}"
        return cls(home=home, port=port, data_dir=Path(data).expanduser(), **overrides)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    version: str
    data_dir: Path
    answering: bool = False


def render_pom(version: str) -> str:
    """A pom whose only job is to let ``mvn dependency:copy-dependencies`` gather the broker's classpath."""
    deps = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.apache.kafka", "kafka-tools", version),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    ]
    body = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n  <modelVersion>4.0.0</modelVersion>\n'
        f"  <groupId>llmpulse</groupId><artifactId>local-kafka</artifactId><version>{version}</version>\n"
        f"  <dependencies>\n{body}\n  </dependencies>\n</project>\n"
    )


def render_server_properties(cfg: BrokerConfig, secure: SecureBroker | None = None) -> str:
    """server.properties for one combined broker+controller, every replication setting sized for 1 node;
    with ``secure``, its listener is SASL_SSL."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # A static voter set (not --standalone's dynamic quorum): a restart on other ports still finds itself.
        "controller.quorum.voters": f"1@{cfg.host}:{cfg.controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{cfg.host}:{cfg.port},CONTROLLER://{cfg.host}:{cfg.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{cfg.host}:{cfg.port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(cfg.data_dir / "kraft-logs"),
        "num.partitions": str(cfg.num_partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        # Small segments keep a dev data dir small and retention cheap to exercise.
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.retention.hours": "24",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    if secure is not None:
        props.update(secure.server_properties(cfg.host, cfg.port, cfg.controller_port))
        if cfg.acls:
            props.update(authorizer_properties(ADMIN))
    return "".join(f"{key}={value}\n" for key, value in props.items())


def render_log4j2(cfg: BrokerConfig) -> str:
    """log4j2 properties: INFO to a size-capped file in the data dir, chatty loggers held at WARN."""
    log = cfg.data_dir / _LOG_FILE
    return (
        "status = warn\n"
        "appender.file.type = RollingFile\n"
        "appender.file.name = File\n"
        f"appender.file.fileName = {log}\n"
        f"appender.file.filePattern = {log}.%i\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "appender.file.policies.type = Policies\n"
        "appender.file.policies.size.type = SizeBasedTriggeringPolicy\n"
        "appender.file.policies.size.size = 20MB\n"
        "appender.file.strategy.type = DefaultRolloverStrategy\n"
        "appender.file.strategy.max = 2\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.file.ref = File\n"
        "logger.kafka.name = org.apache.kafka\n"
        "logger.kafka.level = WARN\n"
        "logger.server.name = kafka.server\n"
        "logger.server.level = INFO\n"
    )


def new_cluster_id() -> str:
    """A Kafka Uuid string: 16 random bytes, URL-safe base64 without padding (what ``random-uuid`` prints). One in
    64 starts with "-": pass it as ``--cluster-id=<id>``, never as a separate argument an option parser takes
    for an option."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


def java_major(version_output: str) -> int:
    """Major Java version from ``java -version`` output ("1.8.0_402" is 8, "17.0.15" is 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        raise BrokerError(f"could not read the Java version from: {version_output.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_tools() -> tuple[str, str]:
    """Paths of ``java`` (>= 17) and ``mvn``, or a BrokerError saying how to get them."""
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            f"java was not found on PATH: the local Kafka broker needs a Java {MIN_JAVA}+ runtime "
            "(e.g. apt-get install openjdk-17-jre-headless)"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "mvn was not found on PATH: the local Kafka broker fetches its jars from Maven Central "
            "with Maven (e.g. apt-get install maven)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    major = java_major(out.stderr + out.stdout)
    if major < MIN_JAVA:
        raise BrokerError(f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA} or newer; {java} is Java {major}")
    return java, mvn


def _pid_alive(pid: int) -> bool:
    """True for a live process that is (as far as /proc tells) a Kafka broker, not a recycled pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A dead child of this process stays a zombie until reaped; it is not running.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return stat.rsplit(")", 1)[1].split()[0] != "Z" and b"kafka.Kafka" in cmdline
    return True


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def answers(bootstrap: str, timeout: float = 2.0, security: KafkaSecurity | None = None) -> bool:
    """True when a Kafka broker at ``bootstrap`` returns metadata within ``timeout`` seconds, to a client with
    ``security`` (default: plaintext, what a local broker started without ``secure`` speaks)."""
    host, _, port = bootstrap.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    from confluent_kafka.admin import AdminClient  # deferred: only needed once something listens

    from llmpulse.connection import client_config

    # Its log goes to DEBUG: connection errors while the broker is still starting are expected.
    admin = AdminClient({**client_config(bootstrap, security or KafkaSecurity(), "llmpulse.broker.kafka"),
                         "socket.timeout.ms": 2000})
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # KafkaException while the broker is starting: it simply does not answer yet
        return False


class LocalBroker:
    """Install, start, stop and inspect one local broker. Every method is safe to call twice."""

    def __init__(self, config: BrokerConfig | None = None) -> None:
        self.config = config or BrokerConfig()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def secure(self) -> SecureBroker | None:
        """The CA, certificates and users of a ``secure`` broker (created on first use); None for plaintext."""
        if not self.config.secure:
            return None
        try:
            return prepare(self.config.data_dir, self.config.host)
        except SecureSetupError as exc:
            raise BrokerError(str(exc)) from None

    def client_security(self) -> KafkaSecurity:
        """How a client reaches this broker with full rights (the ``admin`` user of a secure broker)."""
        secure = self.secure
        return secure.security() if secure is not None else KafkaSecurity()

    @property
    def pid_file(self) -> Path:
        return self.config.data_dir / _PID_FILE

    @property
    def log_file(self) -> Path:
        return self.config.data_dir / _LOG_FILE

    # -- install ---------------------------------------------------------------------------------------------

    def ensure_installed(self) -> Path:
        """Fetch the broker's jars once into ``<home>/libs``; later calls only check the marker file."""
        install_once(self.config.home, f"kafka {self.config.version}", self._fetch_jars)
        return self.config.libs

    def _fetch_jars(self, mvn: str) -> None:
        cfg = self.config
        (cfg.home / "pom.xml").write_text(render_pom(cfg.version))
        staging = cfg.home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [mvn, "-q", "-B", "-f", str(cfg.home / "pom.xml"), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={staging}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as exc:
            raise BrokerError("fetching the Kafka jars with Maven took over 15 minutes") from exc
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise BrokerError(f"Maven could not fetch Kafka {cfg.version}:\n{tail}")
        shutil.rmtree(cfg.libs, ignore_errors=True)
        staging.rename(cfg.libs)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> BrokerStatus:
        """Start the broker (installing it first) and wait until it serves metadata; a running one is kept."""
        cfg = self.config
        pid = self._read_pid()
        if pid is not None and _pid_alive(pid):
            return self._wait_ready(pid)
        self.pid_file.unlink(missing_ok=True)
        for port in (cfg.port, cfg.controller_port):
            if not _port_free(cfg.host, port):
                raise BrokerError(f"port {port} on {cfg.host} is already in use; pick another with --port")
        libs = self.ensure_installed()
        java, _ = require_tools()
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        (cfg.data_dir / "server.properties").write_text(render_server_properties(cfg, self.secure))
        (cfg.data_dir / "log4j2.properties").write_text(render_log4j2(cfg))
        self._format_storage(java, libs)
        pid = self._launch(java, libs)
        try:
            status = self._wait_ready(pid)
            if cfg.acls and cfg.secure:
                try:
                    apply_acls(cfg.bootstrap, self.client_security())
                except Exception as exc:  # KafkaException from the admin client
                    raise BrokerError(f"the broker started but its ACLs could not be created: {exc}") from None
            return status
        except BrokerError:
            self.stop()  # never leave a half-started JVM holding the ports
            raise

    def stop(self) -> bool:
        """SIGTERM (a clean shutdown), SIGKILL after ``stop_timeout``. False when nothing was running."""
        pid = self._read_pid()
        if pid is None or not _pid_alive(pid):
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, self.config.stop_timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> BrokerStatus:
        pid = self._read_pid()
        running = pid is not None and _pid_alive(pid)
        return BrokerStatus(
            running=running,
            pid=pid if running else None,
            bootstrap=self.config.bootstrap,
            version=self.config.version,
            data_dir=self.config.data_dir,
            answering=running and answers(self.config.bootstrap, security=self.client_security()),
        )

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the broker log (or of the JVM console when the log is empty)."""
        for path in (self.log_file, self.config.data_dir / _CONSOLE_FILE):
            if path.is_file() and path.stat().st_size:
                with path.open("rb") as fh:
                    fh.seek(max(0, path.stat().st_size - 64 * 1024))
                    return "\n".join(fh.read().decode("utf-8", "replace").splitlines()[-lines:])
        return "(the broker wrote no log)"

    # -- internals -------------------------------------------------------------------------------------------

    def _jvm(self, java: str, libs: Path) -> list[str]:
        # Serial GC (and C1-only JIT): a dev broker on 2 cores starts faster and idles lighter with them.
        jit = ["-XX:TieredStopAtLevel=1"] if self.config.quick_jit else []
        return [java, f"-Xmx{self.config.heap}", "-XX:+UseSerialGC", *jit,
                "-Djava.awt.headless=true", "-XX:+ExitOnOutOfMemoryError",
                f"-Dlog4j2.configurationFile={self.config.data_dir / 'log4j2.properties'}",
                "-cp", f"{libs}/*"]

    def _format_storage(self, java: str, libs: Path) -> None:
        cfg = self.config
        if (cfg.data_dir / "kraft-logs" / "meta.properties").is_file():
            return  # formatted by an earlier start: keep its topics and offsets
        secure = self.secure
        cmd = [*self._jvm(java, libs), "kafka.tools.StorageTool", "format", "--ignore-formatted",
               f"--cluster-id={new_cluster_id()}", "-c", str(cfg.data_dir / "server.properties"),
               *(secure.format_args() if secure is not None else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise BrokerError(f"formatting the KRaft storage failed:\n{(done.stdout + done.stderr).strip()}")

    def _launch(self, java: str, libs: Path) -> int:
        cfg = self.config
        cmd = [*self._jvm(java, libs), "kafka.Kafka", str(cfg.data_dir / "server.properties")]
        with (cfg.data_dir / _CONSOLE_FILE).open("ab") as console:
            # Its own session: Ctrl-C in the starting terminal or the end of a test run does not reach it.
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console,
                                          stderr=subprocess.STDOUT, start_new_session=True, cwd=cfg.data_dir)
        self.pid_file.write_text(f"{self._proc.pid}\n")
        return self._proc.pid

    def _wait_ready(self, pid: int) -> BrokerStatus:
        cfg = self.config
        deadline = time.monotonic() + cfg.start_timeout
        security = self.client_security()
        while time.monotonic() < deadline:
            if not self._alive(pid):
                self._reap()
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(f"the broker exited during start-up; last log lines:\n{self.log_tail()}")
            if answers(cfg.bootstrap, timeout=1.0, security=security):
                return BrokerStatus(True, pid, cfg.bootstrap, cfg.version, cfg.data_dir, answering=True)
            time.sleep(0.25)
        raise BrokerError(
            f"the broker (pid {pid}) did not answer on {cfg.bootstrap} within {cfg.start_timeout:.0f} s; "
            f"last log lines:\n{self.log_tail()}"
        )

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap()
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return False

    def _alive(self, pid: int) -> bool:
        """Our own child by its exit status (its /proc entry can read empty or stale while the JVM launcher
        starts); a broker found by its pid file by ``_pid_alive``."""
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return _pid_alive(pid)

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.poll()

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


def install_once(home: Path, label: str, fetch: Callable[[str], None]) -> None:
    """Run ``fetch(mvn)`` into ``home`` unless an earlier fetch completed there, one process at a time.

    The marker file naming ``label`` is written after ``fetch`` returns: a half-finished fetch is never trusted.
    """
    if (home / _MARKER).is_file():
        return
    _, mvn = require_tools()
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if (home / _MARKER).is_file():  # another process finished while this one waited
            return
        fetch(mvn)
        (home / _MARKER).write_text(f"{label}\n")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock: two test sessions installing at once fetch the jars only once."""
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
