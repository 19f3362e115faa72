"""Working directories are absolute: the server's rule for every request that names one (per
command type), and the agent's refusal of a relative one or one its user cannot enter."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest

from cloudassist.agent import executor
from cloudassist.agent.executor import (
    LaunchError,
    LaunchPlan,
    ProcessOutcome,
    TaskProcess,
    plan_launch,
)
from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.files import FileDraft, check_file
from cloudassist.server.domain.limits import Limits
from cloudassist.server.domain.model import (
    CommandDraft,
    CommandPatch,
    CommandSpec,
    CommandType,
    InvocationDraft,
    RepeatMode,
)
from cloudassist.server.domain.validation import (
    InvocationChange,
    apply_invocation_change,
    apply_patch,
    validate_command,
    validate_invocation,
)

LIMITS = Limits()
SHELL = CommandType.RUN_SHELL_SCRIPT
BAT = CommandType.RUN_BAT_SCRIPT
POWERSHELL = CommandType.RUN_POWERSHELL_SCRIPT

RELATIVE = ["rel-wd", "./x", "../x", ".", "..", "~/x", "~", "x/../y", "{{dir}}/x", " /srv"]
LINUX_ABSOLUTE = ["/", "/srv/app", "/srv/./app/", "/srv/a..b", "/srv/{{dir}}", "/C:/x"]
LINUX_DOTDOT = ["/srv/../etc", "/srv/..", "/..", "//srv/../x"]
WINDOWS_ABSOLUTE = [
    "C:\\",
    "C:\\app",
    "c:/app/logs",
    "D:\\a b\\c",
    "\\\\server\\share",
    "\\\\server\\share\\dir",
    "//server/share",
    "C:\\app\\a..b",
]
WINDOWS_NOT_ABSOLUTE = [
    "C:",  # the current directory of drive C
    "C:app",
    "\\app",  # the root of the current drive
    "\\\\server",  # no share
    "app\\logs",
    "..\\x",
    "C:\\app\\..\\x",
    "C:/app/../x",
    "\\\\server\\share\\..\\x",
]


def command(command_type: CommandType, working_dir: str) -> CommandSpec:
    draft = CommandDraft("cn-hangzhou", "n", command_type, b"echo", working_dir=working_dir)
    return validate_command(draft, LIMITS)


def invoke(spec: CommandSpec, working_dir: str | None) -> str:
    draft = InvocationDraft("cn-hangzhou", "c-1", ("i-1",), working_dir=working_dir)
    return validate_invocation(draft, "c-1", spec, LIMITS, lambda _f, _t: None).working_dir


def assert_refused(caught: pytest.ExceptionInfo[InvalidArgument], working_dir: str) -> None:
    assert type(caught.value) is InvalidArgument
    assert caught.value.reason == reasons.INVALID_WORKING_DIR
    assert caught.value.field == "working_dir"
    assert caught.value.message.startswith("working_dir: ")
    assert "is not an absolute directory" in caught.value.message
    assert caught.value.metadata == {"working_dir": working_dir}


# --- the rule, per command type ---


@pytest.mark.parametrize("working_dir", ["", *LINUX_ABSOLUTE])
def test_a_shell_command_takes_an_absolute_linux_directory_or_none(working_dir: str) -> None:
    assert command(SHELL, working_dir).working_dir == working_dir


@pytest.mark.parametrize("working_dir", RELATIVE + LINUX_DOTDOT + WINDOWS_ABSOLUTE[:4])
def test_a_shell_command_refuses_any_other_directory(working_dir: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(SHELL, working_dir)
    assert_refused(caught, working_dir)
    assert "starting with /" in caught.value.message
    assert "a shell script" in caught.value.message


@pytest.mark.parametrize("working_dir", ["", *WINDOWS_ABSOLUTE])
def test_a_bat_command_takes_a_drive_or_unc_directory_or_none(working_dir: str) -> None:
    assert command(BAT, working_dir).working_dir == working_dir


@pytest.mark.parametrize(
    "working_dir", RELATIVE + WINDOWS_NOT_ABSOLUTE + ["/srv/app", "/", "/srv/../etc"]
)
def test_a_bat_command_refuses_any_other_directory(working_dir: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(BAT, working_dir)
    assert_refused(caught, working_dir)
    assert "a drive or UNC path" in caught.value.message
    assert "starting with /" not in caught.value.message


@pytest.mark.parametrize("working_dir", ["", *LINUX_ABSOLUTE, *WINDOWS_ABSOLUTE])
def test_a_powershell_command_takes_a_linux_or_windows_directory(working_dir: str) -> None:
    assert command(POWERSHELL, working_dir).working_dir == working_dir


@pytest.mark.parametrize("working_dir", RELATIVE + LINUX_DOTDOT + WINDOWS_NOT_ABSOLUTE)
def test_a_powershell_command_refuses_a_relative_directory(working_dir: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(POWERSHELL, working_dir)
    assert_refused(caught, working_dir)
    assert "starting with /" in caught.value.message
    assert "a drive or UNC path" in caught.value.message


# --- every request that carries a working directory ---


def test_modify_command_refuses_a_relative_directory() -> None:
    spec = command(SHELL, "/srv")
    with pytest.raises(InvalidArgument) as caught:
        apply_patch(spec, CommandPatch(working_dir="../srv"), LIMITS)
    assert_refused(caught, "../srv")
    assert apply_patch(spec, CommandPatch(working_dir="/opt"), LIMITS).working_dir == "/opt"
    assert apply_patch(spec, CommandPatch(working_dir=""), LIMITS).working_dir == ""


@pytest.mark.parametrize(("command_type", "working_dir"), [(SHELL, "rel-wd"), (BAT, "/srv")])
def test_invoke_command_refuses_a_relative_override(
    command_type: CommandType, working_dir: str
) -> None:
    spec = command(command_type, "")
    with pytest.raises(InvalidArgument) as caught:
        invoke(spec, working_dir)
    assert_refused(caught, working_dir)
    assert "the command's" not in caught.value.message


def test_invoke_command_takes_an_absolute_override_of_the_command_type() -> None:
    assert invoke(command(SHELL, "/srv"), "/tmp") == "/tmp"
    assert invoke(command(BAT, "C:\\app"), "D:\\logs") == "D:\\logs"
    assert invoke(command(SHELL, "/srv"), None) == "/srv"


def test_a_relative_directory_stored_with_a_command_is_refused_when_invoked() -> None:
    """A command saved before the rule (or written by an older server) cannot be invoked into
    a relative directory; an absolute override still can."""
    stored = replace(command(SHELL, ""), working_dir="rel-wd")
    with pytest.raises(InvalidArgument) as caught:
        invoke(stored, None)
    assert_refused(caught, "rel-wd")
    assert "the command's 'rel-wd'" in caught.value.message
    assert invoke(stored, "/srv") == "/srv"


def test_modify_invocation_attribute_checks_the_stored_directory_again() -> None:
    spec = validate_invocation(
        InvocationDraft(
            "cn-hangzhou", "c-1", ("i-1",), repeat_mode=RepeatMode.PERIOD, frequency="rate(1h)"
        ),
        "c-1",
        command(SHELL, "/srv"),
        LIMITS,
        lambda _f, _t: None,
    )
    change = InvocationChange(content=b"echo changed")
    changed = apply_invocation_change(spec, change, LIMITS, lambda _f, _t: None)
    assert changed.working_dir == "/srv"
    with pytest.raises(InvalidArgument) as caught:
        apply_invocation_change(
            replace(spec, working_dir="rel-wd"), change, LIMITS, lambda _f, _t: None
        )
    assert_refused(caught, "rel-wd")


@pytest.mark.parametrize("target_dir", ["rel", "../x", "/srv/../etc", "/srv/.."])
def test_send_file_keeps_the_same_rule_for_its_target_directory(target_dir: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_file(FileDraft("f", target_dir, b"x"))
    assert caught.value.reason == reasons.FILE_DIR_INVALID
    assert caught.value.field == "target_dir"
    assert check_file(FileDraft("f", "/srv/a..b/", b"x"))[0].target_dir == "/srv/a..b"


# --- the agent ---


def test_the_agent_reports_the_servers_error_codes() -> None:
    assert executor.DIRECTORY_NOT_ABSOLUTE == reasons.DIRECTORY_NOT_ABSOLUTE
    assert executor.DIRECTORY_NOT_ACCESSIBLE == reasons.DIRECTORY_NOT_ACCESSIBLE
    assert reasons.DIRECTORY_NOT_ABSOLUTE in reasons.INVALID_ON_INSTANCE
    assert reasons.DIRECTORY_NOT_ACCESSIBLE in reasons.INVALID_ON_INSTANCE


@pytest.mark.parametrize("working_dir", ["rel-wd", ".", "..", "./x", "~", "C:\\app"])
def test_the_agent_refuses_a_relative_directory_before_writing_the_script(
    working_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each of them exists relative to the agent's current directory: it is still refused.
    monkeypatch.chdir(tmp_path)
    for name in ("rel-wd", "x", "~", "C:\\app"):
        (tmp_path / name).mkdir()
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    with pytest.raises(LaunchError) as caught:
        plan_launch(SHELL.value, b"touch ran", working_dir, "", {}, scripts_dir=scripts)
    assert caught.value.code == "DirectoryNotAbsolute"
    assert repr(working_dir) in caught.value.info
    assert list(scripts.iterdir()) == [], "no script is written"


def test_the_agent_runs_in_an_absolute_directory(tmp_path: Path) -> None:
    plan = plan_launch(SHELL.value, b"pwd", str(tmp_path), "", {}, scripts_dir=tmp_path)
    assert plan.cwd == str(tmp_path)


def _run(plan: LaunchPlan, started: list[int]) -> ProcessOutcome:
    async def main() -> ProcessOutcome:
        return await TaskProcess(plan, 10, 1).run(started.append, lambda _data: None)

    return asyncio.run(main())


def test_a_directory_the_agents_own_user_cannot_enter_is_refused(tmp_path: Path) -> None:
    """Popen's chdir fails in the child (here: not a directory, which root cannot enter
    either); the script never starts."""
    marker = tmp_path / "ran"
    plan = plan_launch(SHELL.value, f"touch {marker}".encode(), "", "", {}, scripts_dir=tmp_path)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    started: list[int] = []
    with pytest.raises(LaunchError) as caught:
        _run(replace(plan, cwd=str(not_a_dir)), started)
    assert caught.value.code == "DirectoryNotAccessible"
    assert str(not_a_dir) in caught.value.info
    assert started == [], "never reported as started"
    assert not marker.exists()
    # The same plan in a directory it can enter runs.
    outcome = _run(plan, started)
    assert (outcome.kind, outcome.exit_code) == ("finished", 0)
    assert len(started) == 1
    assert marker.exists()
    os.unlink(plan.script_path)
