"""The shape the code keeps (house style): Ray only in tune/, and there only through its public names; tune/ a thin
adapter of small modules. Read from the source with `ast`, so a string that merely mentions Ray does not count."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MOST_LINES = 400  # a module of tune/ a newcomer reads top to bottom


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every import in `path`; name "" for `import module`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [(node.module, alias.name) for alias in node.names]
    return out


@pytest.mark.parametrize("package", ["cnnsearch", "search_spaces", "analysis"])
def test_only_tune_imports_ray(package):
    found = [f"{path.relative_to(REPO)}: {module}" for path in sorted((REPO / package).rglob("*.py"))
             for module, _ in _imports(path) if module == "ray" or module.startswith("ray.")]
    assert not found, found


def test_tune_uses_no_private_name_of_ray():
    """Ray's private modules and names (`ray._private`, `ray.train._internal`, `_TrainingResult`) change between
    releases without notice; pyproject admits any Ray from 2.59 on."""
    found = []
    for path in sorted((REPO / "tune").glob("*.py")):
        for module, name in _imports(path):
            if module == "ray" or module.startswith("ray."):
                if any(part.startswith("_") for part in module.split(".")) or name.startswith("_"):
                    found.append(f"{path.name}: from {module} import {name}")
    assert not found, found


def test_tune_modules_are_small():
    sizes = {path.name: len(path.read_text().splitlines()) for path in (REPO / "tune").glob("*.py")}
    assert sizes and all(lines <= MOST_LINES for lines in sizes.values()), sizes
