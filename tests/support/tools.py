"""The external binaries the ops tests run (promtool, amtool, helm, prometheus, alertmanager).

Looked up on PATH, then where scripts/install-ops-tools.sh installs them: ``$LLMPULSE_TOOLS_DIR/bin``, by default
~/.cache/llmpulse/tools/bin.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def tools_bin() -> Path:
    return Path(os.environ.get("LLMPULSE_TOOLS_DIR", Path.home() / ".cache" / "llmpulse" / "tools")) / "bin"


def find_tool(*names: str) -> str | None:
    """Path of the first of ``names`` found (each on PATH, then in the tools dir), else None."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path=str(tools_bin()))
        if found:
            return found
    return None


def require_tool(*names: str) -> str:
    """Like :func:`find_tool`, but skips the test, naming the install script, when none is installed."""
    found = find_tool(*names)
    if found is None:
        pytest.skip(f"{names[0]} not installed: run scripts/install-ops-tools.sh")
    return found
