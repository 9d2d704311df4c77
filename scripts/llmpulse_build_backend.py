"""The build backend: setuptools' own, with one informational notice of editable installs taken out.

An editable install of this project maps ``llmpulse.schemas``, ``llmpulse.producers`` and ``llmpulse.processors`` to
the top-level ``schemas/``, ``producers/`` and ``processors/`` (pyproject.toml, ``package-dir``), which setuptools
serves with an import finder. For that it always prints "Editable installation. Please be careful with folders in
your working directory with the same name as your package": here the folder of that name, ``llmpulse/``, is the
package itself, so the notice warns about nothing. Every other message, and everything built, is setuptools'.
"""

from __future__ import annotations

import warnings
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the rest of the PEP 517/660 hooks, unchanged)
from setuptools.warnings import InformationOnly


def build_editable(wheel_directory: str, config_settings: dict[str, Any] | None = None,
                   metadata_directory: str | None = None) -> str:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Editable installation", category=InformationOnly)
        return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
