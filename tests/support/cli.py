"""Run ``llmpulse`` commands as a user would, in a subprocess with the environment a test gives."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``llmpulse <args>`` with ``env``; its exit code and captured output (text)."""
    return subprocess.run([sys.executable, "-m", "llmpulse.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
