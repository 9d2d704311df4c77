"""A real Confluent-compatible schema registry on this machine, for tests and trying the registry wire format.

Apicurio Registry, whose ready-to-run build (Quarkus layout, in-memory H2 storage by default) is published on
Maven Central as ``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``. Like the Kafka jars
(llmpulse/broker.py) it is fetched once with ``mvn`` and unpacked under ``~/.cache/llmpulse``; a registry then
starts in a few seconds and serves the Confluent API under ``/apis/ccompat/v7``. Nothing is kept on disk
between runs: every start is an empty registry.

3.0.9 is the newest Apicurio that runs on Java 17 (3.3.x is built for Java 21).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from llmpulse.broker import BrokerError, install_once, require_tools

APICURIO_VERSION = "3.0.9"
CCOMPAT_PATH = "/apis/ccompat/v7"
_ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:tar.gz:all"


class RegistryError(BrokerError):
    """The local registry could not be installed or started; the message says what to do."""


def _default_home(version: str) -> Path:
    return Path.home() / ".cache" / "llmpulse" / f"apicurio-registry-{version}"


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """Where Apicurio is unpacked and how one registry process listens."""

    port: int
    log_file: Path
    version: str = APICURIO_VERSION
    home: Path = field(default_factory=lambda: _default_home(APICURIO_VERSION))
    host: str = "127.0.0.1"
    heap: str = "256m"
    start_timeout: float = 90.0

    @property
    def url(self) -> str:
        """The Confluent-compatible base URL (what ``LLMPULSE_SCHEMA_REGISTRY_URL`` takes)."""
        return f"http://{self.host}:{self.port}{CCOMPAT_PATH}"

    @property
    def runner(self) -> Path:
        return self.home / "app" / f"apicurio-registry-app-{self.version}-runner.jar"


class LocalRegistry:
    """Install once, then start and stop one Apicurio process (a context manager too)."""

    def __init__(self, config: RegistryConfig) -> None:
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.config.url

    def ensure_installed(self) -> Path:
        """Fetch and unpack the registry once; later calls only check the marker file."""
        install_once(self.config.home, f"apicurio-registry {self.config.version}", self._fetch)
        return self.config.runner

    def _fetch(self, mvn: str) -> None:
        cfg = self.config
        download, staging = cfg.home / "download", cfg.home / "app.partial"
        for scratch in (download, staging):
            shutil.rmtree(scratch, ignore_errors=True)
        artifact = _ARTIFACT.format(version=cfg.version)
        cmd = [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={download}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cfg.home)
        except subprocess.TimeoutExpired as exc:
            raise RegistryError("fetching Apicurio Registry with Maven took over 15 minutes") from exc
        archives = list(download.glob("*.tar.gz"))
        if done.returncode != 0 or not archives:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
            raise RegistryError(f"Maven could not fetch {artifact}:\n{tail}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(staging, filter="data")
        shutil.rmtree(download, ignore_errors=True)
        shutil.rmtree(cfg.home / "app", ignore_errors=True)
        staging.rename(cfg.home / "app")

    def answers(self, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=timeout) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def start(self) -> LocalRegistry:
        """Start the registry (installing it first) and wait until its Confluent API answers."""
        cfg = self.config
        runner = self.ensure_installed()
        java, _ = require_tools()
        cfg.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = [java, f"-Xmx{cfg.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
               f"-Dquarkus.http.host={cfg.host}", f"-Dquarkus.http.port={cfg.port}", "-jar", str(runner)]
        with cfg.log_file.open("ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True, cwd=cfg.log_file.parent)
        deadline = time.monotonic() + cfg.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RegistryError(f"Apicurio Registry exited during start-up (code {self._proc.returncode}); "
                                    f"last lines of {cfg.log_file}:\n{self._log_tail()}")
            if self.answers():
                return self
            time.sleep(0.25)
        self.stop()
        raise RegistryError(f"Apicurio Registry did not answer on {self.url} within {cfg.start_timeout:.0f} s; "
                            f"last lines of {cfg.log_file}:\n{self._log_tail()}")

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 15 s; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.config.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
