"""Every module imports in the installed environment, and every third-party import is declared."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

import harness

REPO = Path(__file__).resolve().parent.parent
#: Imported but deliberately not a declared dependency (see the comment in pyproject.toml):
#: the user installs the torch build they want first.
UNDECLARED_ON_PURPOSE = {"torch"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(harness.__path__, prefix="harness."))


def test_walk_finds_the_package() -> None:
    assert {"harness.cli", "harness.backends.fast", "harness.data.catalog", "harness.report.plots"} <= set(_modules())


@pytest.mark.parametrize("module", _modules())
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level names of absolute imports in harness/, anywhere in a file (function-level too)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "harness").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "harness" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_third_party_imports_are_declared_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_normalise(Requirement(r).name) for r in project["dependencies"]}
    owners = packages_distributions()
    undeclared = {}
    for name, files in _third_party_imports().items():
        if name in UNDECLARED_ON_PURPOSE:
            continue
        distributions = {_normalise(d) for d in owners.get(name, [])}
        if not distributions & declared:
            undeclared[name] = (sorted(distributions) or ["not installed"], sorted(files))
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"
