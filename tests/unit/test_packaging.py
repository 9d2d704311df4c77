"""pyproject.toml ships every folder: each Python package and each data file under the mapped top-level folders.

An editable install finds a subpackage missing from ``packages`` anyway, so only a wheel (the Docker image, a
release) would lack it; this test catches that without building one.
"""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def _folders() -> dict[str, Path]:
    """Dotted package name -> folder, for every folder under a ``package-dir`` root (pycache aside)."""
    found = {}
    for name, folder in SETUPTOOLS["package-dir"].items():
        root = ROOT / folder
        for path in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
            if "__pycache__" not in path.parts:
                found[".".join([name, *path.relative_to(root).parts])] = path
    return found


def test_every_python_package_is_listed() -> None:
    packages = set(SETUPTOOLS["packages"])
    missing = sorted(name for name, path in _folders().items() if (path / "__init__.py").exists()
                     and name not in packages)
    assert not missing, f"add to [tool.setuptools] packages: {missing}"


def test_every_data_file_is_shipped() -> None:
    packages = set(SETUPTOOLS["packages"])
    patterns = SETUPTOOLS["package-data"]
    unshipped = [
        str(path.relative_to(ROOT))
        for name, folder in _folders().items()
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix not in (".py", ".pyc")
        and not (name in packages and any(fnmatch(path.name, p) for p in patterns.get(name, ())))
    ]
    assert not unshipped, f"not in [tool.setuptools] packages/package-data: {unshipped}"
