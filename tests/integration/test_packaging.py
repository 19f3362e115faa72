"""`pip install .` gives a working server, agent and CLI: the wheel is built from a copy of the
source tree, holds everything under the one `cloudassist` namespace, installs on its own (not
the editable checkout), and its programs run."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cloudassist.server.store import schema
from cloudassist.server.store.engine import make_engine

ROOT = Path(__file__).resolve().parents[2]
# The folders installed as cloudassist.<folder> (pyproject.toml's package-dir).
PARTS = ("server", "agent", "client", "common")
# What the wheel is built from; the rest of the checkout (venvs, caches, node_modules) is not.
SOURCES = ("pyproject.toml", "README.md", "gen", *PARTS)
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
PROGRAMS = {
    "cloudassist-server": "cloudassist.server.main:main",
    "cloudassist-agent": "cloudassist.agent.main:main",
    "cloudassist": "cloudassist.client.cli:main",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(
                path, source / name, ignore=shutil.ignore_patterns("__pycache__", "node_modules")
            )
        else:
            shutil.copy2(path, source / name)
    # The project's build backend (setuptools) is already in this environment.
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), "."],
        cwd=source,
        check=True,
    )
    (built,) = (work / "dist").glob("cloudassist-*.whl")
    return built


@pytest.fixture(scope="module")
def contents(wheel: Path) -> set[str]:
    """The names of the files in the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if not name.endswith("/")}


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed into a directory of its own; returns that directory."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [*PIP, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        check=True,
    )
    return target


def _repository_modules() -> set[str]:
    """Every module of the repository's packages, named as the wheel must hold it."""
    modules = set()
    for part in PARTS:
        for init in (ROOT / part).rglob("__init__.py"):
            if "node_modules" in init.parts:
                continue
            for module in init.parent.glob("*.py"):
                modules.add(f"cloudassist/{module.relative_to(ROOT).as_posix()}")
    return modules


def test_the_wheel_installs_only_under_cloudassist(contents: set[str]) -> None:
    tops = {name.split("/")[0] for name in contents}
    assert tops == {"cloudassist", "cloudassist-0.1.0.dist-info"}
    loose = [n for n in contents if n.split("/")[0] in PARTS]
    assert not loose, f"top-level packages that would collide with others: {loose[:5]}"


def test_the_wheel_holds_every_package_and_module(contents: set[str]) -> None:
    for package in ("", "v1/", *(f"{part}/" for part in PARTS)):
        assert f"cloudassist/{package}__init__.py" in contents, package
    modules = _repository_modules()
    assert "cloudassist/server/listeners.py" in modules
    missing = sorted(modules - contents)
    assert not missing, f"modules left out of the wheel (pyproject.toml's packages): {missing}"


def test_the_wheel_carries_the_console_assets_and_the_migrations(contents: set[str]) -> None:
    static = {n for n in contents if n.startswith("cloudassist/server/console/static/")}
    assert {n.rsplit("/", 1)[1] for n in static} == {"app.css", "app.js", "index.html"}
    assert not [n for n in contents if n.startswith("cloudassist/server/console/web/")]
    assert "cloudassist/server/migrations/script.py.mako" in contents
    versions = [n for n in contents if n.startswith("cloudassist/server/migrations/versions/")]
    assert len(versions) > 1, versions
    for package in ("v1", *PARTS):
        assert f"cloudassist/{package}/py.typed" in contents, package
    assert "cloudassist/v1/command_pb2.pyi" in contents


def test_the_console_scripts_run_cloudassist_modules(wheel: Path, contents: set[str]) -> None:
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read("cloudassist-0.1.0.dist-info/entry_points.txt").decode()
    entry_points = configparser.ConfigParser()
    entry_points.read_string(text)
    scripts = dict(entry_points["console_scripts"])
    assert scripts == PROGRAMS
    for target in scripts.values():
        module = target.split(":")[0]
        assert module.startswith("cloudassist."), target
        assert f"{module.replace('.', '/')}.py" in contents, target


def _environment(installed: Path) -> dict[str, str]:
    """The wheel's directory first on the path; its dependencies come from this environment
    (site-packages, or a PYTHONPATH it already has)."""
    path = [str(installed), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def run(installed: Path, program: str, *args: str, cwd: Path | None = None) -> str:
    """Runs one of the wheel's programs."""
    env = _environment(installed)
    done = subprocess.run(
        [sys.executable, str(installed / "bin" / program), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{program} {args}: {done.stdout}{done.stderr}"
    return done.stdout


def test_the_programs_come_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    env = _environment(installed)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import cloudassist.server as s, cloudassist.agent as a, cloudassist.client as c, "
            "cloudassist.common as m, cloudassist.v1.command_pb2 as v; "
            "print(s.__file__, a.__file__, c.__file__, m.__file__, v.__file__)",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(out) == 5, out
    assert all(Path(path).is_relative_to(installed) for path in out), out


@pytest.mark.parametrize("program", ["cloudassist-server", "cloudassist-agent", "cloudassist"])
def test_each_program_has_a_version(installed: Path, program: str) -> None:
    assert run(installed, program, "--version").strip() == f"{program} 0.1.0"


def test_the_server_migrates_a_database_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    # The migrations ship in the wheel: a database at the first revision gets every other.
    engine = make_engine(f"sqlite:///{tmp_path / 'cloudassist.db'}")
    try:
        schema.upgrade(engine, schema.FIRST_REVISION)
    finally:
        engine.dispose()
    head = schema.head_revision()
    assert head != schema.FIRST_REVISION, "there is an upgrade to run"
    out = run(installed, "cloudassist-server", "migrate", "--data-dir", str(tmp_path))
    assert out == f"upgraded the database from revision {schema.FIRST_REVISION} to {head}\n"
    show = run(installed, "cloudassist-server", "migrate", "--show", "--data-dir", str(tmp_path))
    assert show == f"database revision: {head}\nthis server needs: {head}\n"


def test_the_agent_service_unit_ships_in_the_wheel(installed: Path, tmp_path: Path) -> None:
    run(
        installed,
        "cloudassist-agent",
        "install-service",
        "--unit-dir",
        str(tmp_path / "units"),
        "--env-file",
        str(tmp_path / "agent.env"),
        "--no-start",
        "--server",
        "server.example:50051",
        "--instance-id",
        "i-packaged",
    )
    unit = (tmp_path / "units" / "cloudassist-agent.service").read_text()
    assert "ExecStart=" in unit
    assert "CLOUDASSIST_AGENT_SERVER" in (tmp_path / "agent.env").read_text()


def test_the_console_ships_built_without_its_sources(installed: Path) -> None:
    console = installed / "cloudassist" / "server" / "console"
    assert sorted(p.name for p in (console / "static").iterdir()) == [
        "app.css",
        "app.js",
        "index.html",
    ]
    assert (console / "static" / "app.js").read_bytes() == (
        ROOT / "server" / "console" / "static" / "app.js"
    ).read_bytes()
    assert not (console / "web").exists()
