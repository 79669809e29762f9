"""The import graph of ``src/locedit``: each package imports only the packages below it, and a
function-local import is a deliberate deferral (the CLI's, or an optional dependency's, with a comment)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "locedit"
# the pipeline order, lowest first; root modules (registry.py, files.py, ...) sit below every package
LAYERS = ("models", "data", "localize", "edit", "evaluate", "study", "experiment", "analysis", "cli")


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, function-local?) of every import in ``path``."""
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno, node.col_offset > 0))
        elif isinstance(node, ast.Import):
            out += [(alias.name, node.lineno, node.col_offset > 0) for alias in node.names]
    return out


def _layer(module: str) -> int:
    """-1 for a root module of locedit, else the index of its package in :data:`LAYERS`."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else -1


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    return "locedit." + ".".join(rel.parts)


FILES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def test_every_package_is_in_the_layer_list():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_point_down(path):
    here = _layer(_package_of(path))
    up = [(m, line) for m, line, _ in _imports(path)
          if m.startswith("locedit.") and (_layer(m) > here or (here == -1 and _layer(m) != -1))]
    assert not up, f"{path.relative_to(SRC)} imports a layer above it: {up}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_function_local_imports_are_deliberate(path):
    lines = path.read_text().splitlines()
    local = [(m, line) for m, line, is_local in _imports(path) if is_local]
    if _layer(_package_of(path)) == LAYERS.index("cli"):
        return  # deferred on purpose, see locedit/cli/__init__.py
    hidden = [(m, line) for m, line in local if m.startswith("locedit")]
    assert not hidden, f"function-local locedit imports hide the graph: {hidden}"
    silent = [(m, line) for m, line in local if "#" not in lines[line - 1]]
    assert not silent, f"function-local imports without a comment saying why: {silent}"


def test_the_root_package_imports_nothing_eagerly():
    """``import locedit`` names its public API as strings and imports a module only on first use."""
    eager = [m for m, _, _ in _imports(SRC / "__init__.py") if m.startswith("locedit")]
    assert eager == []
