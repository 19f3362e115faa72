"""Execution states and the coarse statuses of the original product, with its aggregation rules."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class ExecutionState(StrEnum):
    """Detailed state of one record (one execution on one instance)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    TERMINATED = "TERMINATED"
    ABORTED = "ABORTED"
    INVALID = "INVALID"
    ERROR = "ERROR"

    @property
    def terminal(self) -> bool:
        return self not in ACTIVE_STATES


class InvokeStatus(StrEnum):
    """The coarse status the seed documents use, for records, instances and invocations."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    PARTIAL_FAILED = "PARTIAL_FAILED"


ACTIVE_STATES = frozenset({ExecutionState.PENDING, ExecutionState.RUNNING, ExecutionState.STOPPING})
TERMINAL_STATES = frozenset(set(ExecutionState) - ACTIVE_STATES)

_COARSE = {
    ExecutionState.PENDING: InvokeStatus.RUNNING,
    ExecutionState.RUNNING: InvokeStatus.RUNNING,
    ExecutionState.STOPPING: InvokeStatus.RUNNING,
    # "Finished does not mean succeeded": the exit code and output tell.
    ExecutionState.SUCCESS: InvokeStatus.FINISHED,
    ExecutionState.FAILED: InvokeStatus.FINISHED,
    ExecutionState.TIMEOUT: InvokeStatus.FAILED,
    ExecutionState.ABORTED: InvokeStatus.FAILED,
    ExecutionState.INVALID: InvokeStatus.FAILED,
    ExecutionState.ERROR: InvokeStatus.FAILED,
    ExecutionState.CANCELLED: InvokeStatus.STOPPED,
    ExecutionState.TERMINATED: InvokeStatus.STOPPED,
}


def coarse_status(state: ExecutionState) -> InvokeStatus:
    """The seed's status of a record or of a one-shot invocation instance."""
    return _COARSE[state]


def states_with_status(status: InvokeStatus) -> frozenset[ExecutionState]:
    """Every detailed state whose coarse status is `status` (for filtering)."""
    return frozenset(s for s, c in _COARSE.items() if c is status)


def overall_status(instance_statuses: Iterable[InvokeStatus]) -> InvokeStatus:
    """The status of a whole invocation from the statuses of its instances (the seed's table).

    Any Running: Running. Otherwise all Failed: Failed; some Failed: PartialFailed;
    all Stopped: Stopped; all Finished, or Finished mixed with Stopped: Finished.
    """
    statuses = list(instance_statuses)
    if not statuses:
        raise ValueError("an invocation has at least one instance")
    if InvokeStatus.RUNNING in statuses:
        return InvokeStatus.RUNNING
    failed = statuses.count(InvokeStatus.FAILED)
    if failed == len(statuses):
        return InvokeStatus.FAILED
    if failed:
        return InvokeStatus.PARTIAL_FAILED
    if statuses.count(InvokeStatus.STOPPED) == len(statuses):
        return InvokeStatus.STOPPED
    return InvokeStatus.FINISHED
