"""The layering the package docstrings promise: imports only go down.

``compute`` may use ``data`` and ``store``; ``data`` and ``store`` use neither each other
nor ``compute``; nothing in ``features`` reaches up into ``classifiers`` or ``pipeline``.
A function-level import counts too: it is a dependency all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FEATURES = Path(__file__).resolve().parents[2] / "features"

# What each part of features/ must never import.
FORBIDDEN = {
    "data": ("features.compute", "features.store", "classifiers", "pipeline"),
    "store": ("features.compute", "features.data", "classifiers", "pipeline"),
    "compute": ("classifiers", "pipeline"),
    "": ("features.compute", "features.data", "features.store", "classifiers", "pipeline"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _modules(part: str) -> list[Path]:
    if part:
        return sorted((FEATURES / part).glob("*.py"))
    return sorted(path for path in FEATURES.glob("*.py") if path.name != "__init__.py")


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_imports_only_go_down(part):
    modules = _modules(part)
    assert modules, f"features/{part} has no modules"
    upward = [
        f"{path.relative_to(FEATURES.parent)} imports {name}"
        for path in modules
        for name in sorted(_imports(path))
        if name.startswith(FORBIDDEN[part])
    ]
    assert not upward, "\n".join(upward)
