"""Who may import whom, read from the source (AST) without importing anything.

* ``processors/core`` is pure logic on numpy arrays: it imports the standard library (minus the I/O modules),
  numpy, genai-prices' built-in catalogue, itself and the modules shared with the SDK; it opens no files.
  Files are read at the edge (``processors/loaders.py``) and handed in as data.
* The modules shared by the SDK and the processors (``llmpulse.pii``, ``llmpulse.circuit_breaker``,
  ``llmpulse.config``, ``llmpulse.backoff``) import the standard library only, so the SDK's base install can use
  them; an optional extra only inside a function, with a fallback (``SHARED_OPTIONAL``).
* The SDK (``producers/``) imports nothing from the processors or the CLI.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "processors" / "core"
SHARED = [ROOT / "llmpulse" / name for name in ("pii.py", "circuit_breaker.py", "config.py", "backoff.py")]
SHARED_OPTIONAL = frozenset({"phonenumbers"})  # extras a shared module may import lazily, with a fallback

IO_MODULES = frozenset({"glob", "http", "io", "os", "pathlib", "shutil", "socket", "subprocess", "tempfile",
                        "urllib"})
CORE_MAY_IMPORT = ("llmpulse.processors.core", "llmpulse.pii", "llmpulse.circuit_breaker", "numpy",
                   "genai_prices")  # genai-prices prices from the catalogue inside its package, no file of ours
STDLIB = frozenset(sys.stdlib_module_names) - IO_MODULES

# Calls that read or write files: open() and Path.open/read_*/write_*, numpy's and json/pickle's file forms.
FILE_METHODS = frozenset({"open", "read_text", "read_bytes", "write_text", "write_bytes", "tofile"})
FILE_FUNCTIONS = frozenset({
    ("np", "load"), ("np", "save"), ("np", "savez"), ("np", "savez_compressed"), ("np", "loadtxt"),
    ("np", "savetxt"), ("np", "genfromtxt"), ("np", "fromfile"), ("json", "load"), ("json", "dump"),
    ("pickle", "load"), ("pickle", "dump"),
})


def _within(name: str, prefixes: tuple[str, ...] | frozenset[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every import; ``from a import b`` yields ``a.b``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            if node.level:  # relative: the checks below are written for absolute names
                yield node.lineno, "." * node.level + (node.module or "")
                continue
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _file_calls(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            yield node.lineno, "open()"
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if func.attr in FILE_METHODS or (owner, func.attr) in FILE_FUNCTIONS:
                yield node.lineno, f"{owner or ''}.{func.attr}()"


def _parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _core_import_allowed(name: str) -> bool:
    return _within(name, CORE_MAY_IMPORT) or (not name.startswith(".") and name.split(".")[0] in STDLIB)


def core_violations(path: Path) -> list[str]:
    tree = _parse(path)
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = [f"{where}:{line} imports {name}" for line, name in _imports(tree) if not _core_import_allowed(name)]
    found += [f"{where}:{line} does file I/O: {call}" for line, call in _file_calls(tree)]
    return found


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_core_imports_no_sdk_no_framework_and_does_no_file_io() -> None:
    modules = _modules(CORE)
    assert len(modules) > 20  # the scan found the package
    violations = [v for path in modules for v in core_violations(path)]
    assert not violations, "processors/core must stay pure (read files in processors/loaders.py):\n" + "\n".join(
        violations
    )


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("from llmpulse.producers.pii import redact", "imports llmpulse.producers.pii.redact"),
        ("from llmpulse import producers", "imports llmpulse.producers"),
        ("import yaml", "imports yaml"),
        ("from pathlib import Path", "imports pathlib.Path"),
        ("from llmpulse.processors import settings", "imports llmpulse.processors.settings"),
        ("data = open('prices.yaml').read()", "does file I/O: open()"),
        ("text = config_path.read_text()", "does file I/O: config_path.read_text()"),
        ("weights = np.load(path)", "does file I/O: np.load()"),
        ("state = json.load(handle)", "does file I/O: json.load()"),
    ],
)
def test_the_scan_catches_what_it_forbids(tmp_path: Path, source: str, reason: str) -> None:
    module = tmp_path / "bad.py"
    module.write_text(source + "\n")
    assert core_violations(module) == [f"{module}:1 {reason}"]


def _top_level_import_lines(tree: ast.Module) -> set[int]:
    return {node.lineno for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)}


def test_shared_modules_need_only_the_standard_library() -> None:
    # An optional extra may be imported inside a function that falls back when it is missing (phonenumbers:
    # the ``pii`` extra, see llmpulse/pii.py); never at import time.
    violations = []
    for path in SHARED:
        tree = _parse(path)
        top_level = _top_level_import_lines(tree)  # type: ignore[arg-type]
        for line, name in _imports(tree):
            root = name.split(".")[0]
            if root in sys.stdlib_module_names or (root in SHARED_OPTIONAL and line not in top_level):
                continue
            violations.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not violations, "\n".join(violations)


# The SDK's opt-in input guard runs the worker's own detectors (issue #15): imported inside a function, only when
# guard="observe"|"block" (the [guard] extra brings numpy), never at import time.
GUARD_DETECTORS = ("llmpulse.processors.core.guards", "llmpulse.processors.loaders")


def test_sdk_imports_nothing_from_the_processors_or_the_cli() -> None:
    forbidden = ("llmpulse.processors", "llmpulse.commands", "llmpulse.cli")
    guard = ROOT / "producers" / "prompt_guard.py"
    guard_top_level = _top_level_import_lines(_parse(guard))  # type: ignore[arg-type]
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _modules(ROOT / "producers")
        for line, name in _imports(_parse(path))
        if _within(name, forbidden)
        and not (path == guard and _within(name, GUARD_DETECTORS) and line not in guard_top_level)
    ]
    assert not violations, "\n".join(violations)
