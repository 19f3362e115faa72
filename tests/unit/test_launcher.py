"""Launchers: the command line a script runs with."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from cloudassist.agent.executor import LaunchError, plan_launch, remove_script, script_name
from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.validation import check_launcher


@pytest.mark.parametrize(
    "launcher", ["", "python3 -u {{ACS::ScriptFile}}", "bash -e '{{ACS::ScriptFile}}' arg"]
)
def test_valid_launchers_pass(launcher: str) -> None:
    assert check_launcher(launcher) == launcher


@pytest.mark.parametrize(
    "launcher",
    [
        "python3",  # no script file
        "{{ACS::ScriptFile}}",  # no interpreter
        "sh {{ACS::ScriptFile}} {{ACS::ScriptFile}}",
        "sh 'unclosed {{ACS::ScriptFile}}",
        "sh {{ACS::ScriptFile}} " + "x" * 1024,
    ],
)
def test_invalid_launchers_are_refused(launcher: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_launcher(launcher)
    assert caught.value.reason == reasons.INVALID_LAUNCHER
    assert caught.value.field == "launcher"


def _plan(launcher: str, script: bytes = b"print(1)") -> list[str]:
    with tempfile.TemporaryDirectory() as scripts:
        plan = plan_launch(
            "RUN_SHELL_SCRIPT", script, "", "", {}, launcher, scripts_dir=Path(scripts)
        )
        assert plan.script_path == str(Path(scripts, "script"))
        assert Path(plan.script_path).read_bytes() == script
        assert Path(plan.script_path).stat().st_mode & 0o777 == 0o700
        remove_script(plan.script_path)
        assert not Path(plan.script_path).exists()
        return plan.argv


def test_the_script_file_takes_the_placeholders_place() -> None:
    argv = _plan("python3 -u {{ACS::ScriptFile}} --flag")
    assert argv[:2] == ["python3", "-u"]
    assert argv[2].endswith("/script")
    assert argv[3] == "--flag"


def test_without_a_launcher_a_shebang_or_sh_decides() -> None:
    assert _plan("", b"#!/usr/bin/env python3\n")[0].endswith("/script")
    assert _plan("", b"echo hi")[0] == "/bin/sh"


def test_a_missing_interpreter_leaves_no_script_behind(tmp_path: Path) -> None:
    launcher = "no-such-interpreter {{ACS::ScriptFile}}"
    with pytest.raises(LaunchError) as caught:
        plan_launch("RUN_SHELL_SCRIPT", b"x", "", "", {}, launcher, scripts_dir=tmp_path)
    assert caught.value.code == reasons.LAUNCHER_NOT_FOUND
    assert list(tmp_path.iterdir()) == []


def test_a_script_is_named_for_its_task_unless_the_id_is_not_a_plain_name() -> None:
    assert script_name("r-01abc", "RUN_SHELL_SCRIPT") == "r-01abc"
    assert script_name("r-01abc", "RUN_POWERSHELL_SCRIPT") == "r-01abc.ps1", "pwsh -File"
    for unsafe in ("../etc/passwd", ".hidden", "a/b", "", "x" * 200):
        name = script_name(unsafe, "RUN_SHELL_SCRIPT")
        assert "/" not in name
        assert not name.startswith(".")
        assert 0 < len(name) <= 128
