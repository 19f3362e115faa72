"""`make run` installs the project with its runtime dependencies only, not the dev extras: every
module the server, the agent and the CLI import (at start-up or later, inside a function) must
come from the standard library, the project itself, or a distribution that the runtime
dependencies bring (or the opt-in `uvloop` extra)."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"cloudassist"}
# Extras a user may choose without the dev tools.
RUNTIME_EXTRAS = ("uvloop",)


def _imported(path: Path) -> Iterator[tuple[str, int]]:
    """The top-level name of every absolute import in a source file, with its line."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def _product_sources() -> Iterator[Path]:
    """The Python files of the packages the distribution ships (pyproject.toml's list)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders: dict[str, str] = setuptools["package-dir"]
    for package in setuptools["packages"]:
        if package.split(".")[:2] == ["cloudassist", "v1"] or package == "cloudassist":
            continue  # generated
        # The folder of the package: that of its nearest mapped parent, and the rest.
        parent = max((p for p in folders if package == p or package.startswith(p + ".")), key=len)
        rest = package[len(parent) :].lstrip(".").replace(".", "/")
        yield from sorted((ROOT / folders[parent] / rest).glob("*.py"))


def _required(requirements: list[str], extras: set[str]) -> dict[str, set[str]]:
    """The distributions `requirements` name on this platform for a distribution installed
    with `extras`, each with the extras asked of it."""
    found: dict[str, set[str]] = {}
    for line in requirements:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in {"", *extras}):
            found.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    return found


def _runtime_closure() -> set[str]:
    """cloudassist's runtime dependencies and theirs, transitively, with the extras asked."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = list(project["dependencies"])
    for extra in RUNTIME_EXTRAS:
        direct += project["optional-dependencies"][extra]
    closure: dict[str, set[str]] = {}
    todo: list[dict[str, set[str]]] = [_required(direct, set())]
    while todo:
        for name, wanted in todo.pop().items():
            if name in closure and wanted <= closure[name]:
                continue
            closure.setdefault(name, set()).update(wanted)
            todo.append(_required(importlib.metadata.requires(name) or [], closure[name]))
    return set(closure)


def test_the_product_imports_nothing_that_only_the_dev_extras_install() -> None:
    closure = _runtime_closure()
    assert {"grpcio", "aiohttp", "psycopg-binary"} <= closure
    assert not {"pytest", "moto", "selenium", "mypy", "grpcio-tools"} & closure
    providers = importlib.metadata.packages_distributions()
    outside = []
    sources = list(_product_sources())
    assert len(sources) > 50, sources
    for path in sources:
        for name, line in _imported(path):
            if name in FIRST_PARTY or name in sys.stdlib_module_names:
                continue
            distributions = {canonicalize_name(d) for d in providers.get(name, [])}
            if not distributions & closure:
                where = f"{path.relative_to(ROOT)}:{line}"
                outside.append(f"{where}: {name} ({', '.join(sorted(distributions))})")
    assert not outside, "imported, but not a runtime dependency:\n" + "\n".join(outside)
