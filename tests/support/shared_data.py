"""The reference data beside the checkout (``../shared/data``, or ``LLMPULSE_SHARED_DATA``): traces, labelled prompts.

CI always has it, so a test that needs it fails, naming what is missing, instead of skipping. The project itself
runs without it; a test whose subject is that fallback points ``LLMPULSE_SHARED_DATA`` elsewhere and does not
use this helper.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmpulse.config import shared_data_dir


def shared_data(*parts: str) -> Path:
    """The file or folder ``parts`` below the shared data folder; fails the test when it is missing."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.fail(f"reference data missing: {path}. The tests expect the shared data folder beside the checkout "
                    "(../shared/data, as CI has it) or LLMPULSE_SHARED_DATA naming it.", pytrace=False)
    return path
