"""`pip install .` gives a working server, agent and CLI: the wheel is built from a copy of the
source tree, installed on its own (not the editable checkout), and its programs run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.store import schema
from server.store.engine import make_engine

ROOT = Path(__file__).resolve().parents[2]
# What the wheel is built from; the rest of the checkout (venvs, caches, node_modules) is not.
SOURCES = ("pyproject.toml", "README.md", "gen", "server", "agent", "client")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed into a directory of its own; returns that directory."""
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
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # The project's build backend (setuptools) is already in this environment.
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), "."],
        cwd=source,
        check=True,
    )
    (wheel,) = (work / "dist").glob("cloudassist-*.whl")
    target = work / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
        check=True,
    )
    return target


def run(installed: Path, program: str, *args: str, cwd: Path | None = None) -> str:
    """Runs one of the wheel's programs; its dependencies come from this environment."""
    env = {**os.environ, "PYTHONPATH": str(installed)}
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
    env = {**os.environ, "PYTHONPATH": str(installed)}
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import server, agent, client, cloudassist.v1.command_pb2 as c; "
            "print(server.__file__, agent.__file__, client.__file__, c.__file__)",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
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
    console = installed / "server" / "console"
    assert sorted(p.name for p in (console / "static").iterdir()) == [
        "app.css",
        "app.js",
        "index.html",
    ]
    assert (console / "static" / "app.js").read_bytes() == (
        ROOT / "server" / "console" / "static" / "app.js"
    ).read_bytes()
    assert not (console / "web").exists()
