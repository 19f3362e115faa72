"""What an agent is told to run, and how what it reports changes a record's state."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from cloudassist.server.domain import reasons
from cloudassist.server.domain.files import FileSpec
from cloudassist.server.domain.model import CommandType, InvocationSpec
from cloudassist.server.domain.parameters import BuiltinValues, fill_parameters
from cloudassist.server.domain.status import ExecutionState


@dataclass(frozen=True)
class Task:
    """One record as the agent sees it: the script with every parameter filled in, and the
    instance it is for (a task names its instance, so it cannot be sent to another)."""

    task_id: str
    instance_id: str
    invoke_id: str
    command_id: str
    command_type: CommandType
    script: bytes
    timeout_seconds: int
    working_dir: str
    username: str
    output_limit: int
    env: dict[str, str] = field(default_factory=dict)
    launcher: str = ""
    file: FileSpec | None = None


def build_task(
    record_id: str, instance_id: str, invoke_id: str, spec: InvocationSpec, output_limit: int
) -> Task:
    builtins = BuiltinValues(
        instance_id=instance_id,
        region_id=spec.region_id,
        invoke_id=invoke_id,
        command_id=spec.command_id,
    )
    script = fill_parameters(
        spec.content, spec.parameters, builtins, enable_parameter=spec.enable_parameter
    )
    return Task(
        task_id=record_id,
        instance_id=instance_id,
        invoke_id=invoke_id,
        command_id=spec.command_id,
        command_type=spec.command_type,
        script=script,
        timeout_seconds=spec.timeout_seconds,
        working_dir=spec.working_dir,
        username=spec.username,
        output_limit=output_limit,
        env=spec.env,
        launcher=spec.launcher,
        file=spec.file,
    )


class EndKind(StrEnum):
    FINISHED = "FINISHED"  # the process exited on its own
    STOPPED = "STOPPED"  # killed after a user's stop
    TIMED_OUT = "TIMED_OUT"  # killed by the agent's own timeout
    ERROR = "ERROR"  # the agent could not run it


@dataclass(frozen=True)
class TaskEnd:
    """The last report of an agent about a task."""

    record_id: str
    instance_id: str
    kind: EndKind
    exit_code: int | None
    output_size: int
    time_ms: int
    start_ms: int | None = None
    started: bool = True
    error_code: str = ""
    error_info: str = ""


@dataclass(frozen=True)
class Outcome:
    state: ExecutionState
    error_code: str = ""
    error_info: str = ""


def outcome_of(end: TaskEnd) -> Outcome:
    """The terminal state an agent's last report leads to (if the record is still active)."""
    if end.kind is EndKind.FINISHED:
        if end.exit_code == 0:
            return Outcome(ExecutionState.SUCCESS)
        return Outcome(
            ExecutionState.FAILED,
            reasons.EXIT_CODE_NONZERO,
            f"the script exited with code {end.exit_code}",
        )
    if end.kind is EndKind.STOPPED:
        return Outcome(ExecutionState.TERMINATED if end.started else ExecutionState.CANCELLED)
    if end.kind is EndKind.TIMED_OUT:
        return Outcome(
            ExecutionState.TIMEOUT,
            reasons.EXECUTION_TIMEOUT,
            "the agent killed the script when its timeout passed",
        )
    state = (
        ExecutionState.INVALID
        if end.error_code in reasons.INVALID_ON_INSTANCE
        else ExecutionState.ERROR
    )
    return Outcome(state, end.error_code or reasons.EXECUTION_EXCEPTION, end.error_info)
