"""Tasks sent to agents and the outcome of an agent's last report (server/domain/tasks.py)."""

from __future__ import annotations

from typing import Any

import pytest

from cloudassist.server.domain import reasons
from cloudassist.server.domain.model import CommandType, InvocationSpec, RepeatMode
from cloudassist.server.domain.status import ExecutionState
from cloudassist.server.domain.tasks import EndKind, Outcome, TaskEnd, build_task, outcome_of

SCRIPT = (
    b"echo {{greeting}} {{ACS::InstanceId}} {{ ACS::RegionId }} "
    b"{{ACS::InvokeId}} {{ACS::CommandId}} {{unknown}}"
)


def spec(**changes: Any) -> InvocationSpec:
    values: dict[str, Any] = {
        "region_id": "cn-hangzhou",
        "command_id": "c-1",
        "command_name": "hello",
        "command_type": CommandType.RUN_SHELL_SCRIPT,
        "content": SCRIPT,
        "enable_parameter": True,
        "parameters": {"greeting": "hi"},
        "instance_ids": ("i-1", "i-2"),
        "repeat_mode": RepeatMode.ONCE,
        "frequency": "",
        "timeout_seconds": 90,
        "working_dir": "/srv",
        "username": "deploy",
    }
    values.update(changes)
    return InvocationSpec(**values)


def end(kind: EndKind, **changes: Any) -> TaskEnd:
    values: dict[str, Any] = {
        "record_id": "r-1",
        "instance_id": "i-1",
        "kind": kind,
        "exit_code": None,
        "output_size": 0,
        "time_ms": 1_000,
    }
    values.update(changes)
    return TaskEnd(**values)


def test_build_task_fills_custom_and_builtin_parameters_per_instance() -> None:
    first = build_task("r-1", "i-1", "t-1", spec(), output_limit=1024)
    second = build_task("r-2", "i-2", "t-1", spec(), output_limit=1024)
    assert first.script == b"echo hi i-1 cn-hangzhou t-1 c-1 {{unknown}}"
    assert second.script == b"echo hi i-2 cn-hangzhou t-1 c-1 {{unknown}}"


def test_build_task_copies_the_invocation() -> None:
    task = build_task("r-1", "i-1", "t-1", spec(), output_limit=4096)
    assert task.task_id == "r-1"
    assert task.invoke_id == "t-1"
    assert task.command_id == "c-1"
    assert task.command_type is CommandType.RUN_SHELL_SCRIPT
    assert task.timeout_seconds == 90
    assert task.working_dir == "/srv"
    assert task.username == "deploy"
    assert task.output_limit == 4096


def test_build_task_leaves_the_script_alone_when_parameters_are_disabled() -> None:
    task = build_task("r-1", "i-1", "t-1", spec(enable_parameter=False), output_limit=1)
    assert task.script == SCRIPT


def test_build_task_does_not_change_the_spec() -> None:
    original = spec()
    build_task("r-1", "i-1", "t-1", original, output_limit=1)
    assert original.content == SCRIPT
    assert original.parameters == {"greeting": "hi"}


def test_finished_with_exit_zero_is_success() -> None:
    assert outcome_of(end(EndKind.FINISHED, exit_code=0)) == Outcome(ExecutionState.SUCCESS)


@pytest.mark.parametrize("code", [1, 3, 127, -9])
def test_finished_with_nonzero_exit_is_failed(code: int) -> None:
    outcome = outcome_of(end(EndKind.FINISHED, exit_code=code))
    assert outcome.state is ExecutionState.FAILED
    assert outcome.error_code == reasons.EXIT_CODE_NONZERO
    assert str(code) in outcome.error_info


def test_stopped_after_start_is_terminated() -> None:
    outcome = outcome_of(end(EndKind.STOPPED, exit_code=-15, started=True))
    assert outcome.state is ExecutionState.TERMINATED
    assert outcome.error_code == ""


def test_stopped_before_start_is_cancelled() -> None:
    outcome = outcome_of(end(EndKind.STOPPED, started=False))
    assert outcome.state is ExecutionState.CANCELLED
    assert outcome.error_code == ""


def test_timed_out_is_timeout() -> None:
    outcome = outcome_of(end(EndKind.TIMED_OUT, exit_code=-9))
    assert outcome.state is ExecutionState.TIMEOUT
    assert outcome.error_code == reasons.EXECUTION_TIMEOUT


@pytest.mark.parametrize(
    "code",
    [
        reasons.DIRECTORY_NOT_EXISTS,
        reasons.DIRECTORY_NOT_ABSOLUTE,
        reasons.DIRECTORY_NOT_ACCESSIBLE,
        reasons.ACCOUNT_NOT_EXISTS,
        reasons.COMMAND_NOT_APPLICABLE,
    ],
)
def test_error_on_the_instance_is_invalid(code: str) -> None:
    outcome = outcome_of(end(EndKind.ERROR, started=False, error_code=code, error_info="why"))
    assert outcome == Outcome(ExecutionState.INVALID, code, "why")


def test_other_error_is_error_with_its_code() -> None:
    outcome = outcome_of(end(EndKind.ERROR, error_code="SpawnFailed", error_info="no shell"))
    assert outcome == Outcome(ExecutionState.ERROR, "SpawnFailed", "no shell")


def test_error_without_a_code_is_an_execution_exception() -> None:
    outcome = outcome_of(end(EndKind.ERROR, error_info="boom"))
    assert outcome == Outcome(ExecutionState.ERROR, reasons.EXECUTION_EXCEPTION, "boom")


@pytest.mark.parametrize("kind", list(EndKind))
def test_every_end_kind_leads_to_a_terminal_state(kind: EndKind) -> None:
    assert outcome_of(end(kind, exit_code=0)).state.terminal
