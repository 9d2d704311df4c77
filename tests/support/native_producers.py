"""The native producers under examples/ (Java with Maven, Node with npm), built once per change of their inputs.

Each build runs in its project folder (``target/`` and ``node_modules/`` are git-ignored) and leaves a stamp
holding the digest of its inputs; while the inputs are unchanged the next session skips the toolchain entirely.
Maven's and npm's own caches (``~/.m2``, ``~/.npm``) make a rebuild after a change fast too. A missing toolchain
skips the test, naming scripts/setup.sh; a failing build fails it, with the build's output.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCHEMAS = ROOT / "schemas"
JAVA_PROJECT = EXAMPLES / "java-producer"
NODE_PROJECT = EXAMPLES / "node-producer"
# The contracts the producers write; the Java jar carries them, Node reads them at run time.
CONTRACTS = (SCHEMAS / "llm_call.v1.avsc", SCHEMAS / "llm_call_batch.v1.avsc")
BUILD_TIMEOUT_S = 600  # a first build on a fresh machine downloads the dependencies


def _require(*names: str) -> list[str]:
    found = [shutil.which(name) for name in names]
    missing = [name for name, path in zip(names, found, strict=True) if path is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run scripts/setup.sh")
    return [path for path in found if path is not None]


def _digest(files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _build_once(project: Path, stamp: Path, inputs: Iterable[Path], command: list[str]) -> None:
    """Run ``command`` in ``project`` unless ``stamp`` holds the inputs' digest already (one build at a time)."""
    wanted = _digest(inputs)
    with (Path(tempfile.gettempdir()) / f"llmpulse-{project.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == wanted:
            return
        result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                                check=False)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed in {project}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(wanted)


def java_producer() -> list[str]:
    """The command that runs examples/java-producer (built with ``mvn package`` when its inputs changed)."""
    java, mvn = _require("java", "mvn")
    inputs = [JAVA_PROJECT / "pom.xml", *CONTRACTS, *(p for p in (JAVA_PROJECT / "src").rglob("*") if p.is_file())]
    _build_once(JAVA_PROJECT, JAVA_PROJECT / "target" / ".inputs-digest", inputs, [mvn, "-B", "-q", "package"])
    return [java, "-jar", str(JAVA_PROJECT / "target" / "llmpulse-java-producer.jar")]


def node_producer() -> list[str]:
    """The command that runs examples/node-producer (``npm ci`` when its package files changed)."""
    node, npm = _require("node", "npm")
    inputs = [NODE_PROJECT / "package.json", NODE_PROJECT / "package-lock.json"]
    _build_once(NODE_PROJECT, NODE_PROJECT / "node_modules" / ".inputs-digest", inputs,
                [npm, "ci", "--no-audit", "--no-fund"])
    return [node, str(NODE_PROJECT / "src" / "main.js")]


PRODUCERS = {"java": java_producer, "node": node_producer}
