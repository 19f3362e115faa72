"""RerunInvocation's rules: which instances of an ended invocation run again, and what runs.

A rerun is a new invocation that runs once, on the instances whose latest record of the source
invocation failed, with what the source stored: its content, type, parameters and options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import FailedPrecondition, InvalidArgument
from cloudassist.server.domain.model import Invocation, InvocationSpec, RepeatMode
from cloudassist.server.domain.status import ExecutionState, InvokeStatus

# The states of a record that failed, in the order messages list them: a non-zero exit code,
# a timeout, never delivered, invalid on the instance, the agent could not run it.
FAILED_STATES: tuple[ExecutionState, ...] = (
    ExecutionState.FAILED,
    ExecutionState.TIMEOUT,
    ExecutionState.ABORTED,
    ExecutionState.INVALID,
    ExecutionState.ERROR,
)

_STATUS_NAMES = {
    InvokeStatus.RUNNING: "Running",
    InvokeStatus.FINISHED: "Finished",
    InvokeStatus.FAILED: "Failed",
    InvokeStatus.STOPPED: "Stopped",
    InvokeStatus.PARTIAL_FAILED: "PartialFailed",
}


def check_states(states: Sequence[ExecutionState]) -> tuple[ExecutionState, ...]:
    """The failed states chosen (all of them when none is given), without repeats."""
    others = [s for s in states if s not in FAILED_STATES]
    if others:
        raise InvalidArgument(
            reasons.INVALID_RERUN_STATES,
            f"states: {', '.join(dict.fromkeys(s.value for s in others))} is not a failed state; "
            f"choose from {', '.join(s.value for s in FAILED_STATES)}",
            field="states",
        )
    chosen = set(states) or set(FAILED_STATES)
    return tuple(s for s in FAILED_STATES if s in chosen)


def rerun_targets(
    invocation: Invocation,
    states: Sequence[ExecutionState],
    instance_ids: Sequence[str] = (),
) -> tuple[str, ...]:
    """The instances to run again: those whose latest record of `invocation` is in one of
    `states` (checked with `check_states` first), only `instance_ids` when given.

    The invocation must have ended: a Running one may still change. Its status does not
    otherwise decide: an exit code other than 0 leaves a record FAILED under a Finished
    invocation, and that record runs again like one under a Failed or PartialFailed one.
    """
    chosen = check_states(states)
    invoke_id = invocation.invoke_id
    status = _STATUS_NAMES[invocation.status]
    if invocation.status is InvokeStatus.RUNNING:
        raise FailedPrecondition(
            reasons.INVOCATION_NOT_ENDED,
            f"invoke_id: invocation {invoke_id} is {status}; it can run again once it has ended",
            field="invoke_id",
            metadata={"invoke_status": invocation.status.value},
        )
    failed = [m.instance_id for m in invocation.instances if m.state in chosen]
    if not failed:
        raise FailedPrecondition(
            reasons.NO_FAILED_INSTANCE,
            f"invoke_id: invocation {invoke_id} is {status} and no instance of it ended "
            f"{' or '.join(s.value for s in chosen)}; there is nothing to run again",
            field="invoke_id",
            metadata={"invoke_status": invocation.status.value},
        )
    if not instance_ids:
        return tuple(failed)
    wanted = tuple(dict.fromkeys(instance_ids))
    others = [i for i in wanted if i not in failed]
    if others:
        raise FailedPrecondition(
            reasons.INSTANCE_NOT_FAILED,
            f"instance_ids: {', '.join(others)} did not end {' or '.join(s.value for s in chosen)} "
            f"in invocation {invoke_id}; the instances that did: {', '.join(failed)}",
            field="instance_ids",
            metadata={"instance_ids": ",".join(others)},
        )
    return wanted


def rerun_spec(source: InvocationSpec, instance_ids: Sequence[str]) -> InvocationSpec:
    """The new invocation: the source's content and options, once, on `instance_ids`."""
    return replace(
        source,
        instance_ids=tuple(instance_ids),
        repeat_mode=RepeatMode.ONCE,
        frequency="",
    )


@dataclass(frozen=True)
class Rerun:
    """The invocation a rerun made."""

    invoke_id: str
    command_id: str
    instance_ids: tuple[str, ...]
