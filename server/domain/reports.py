"""What agents report, as the batching recorder hands it to the store, and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudassist.server.domain.tasks import Task, TaskEnd


@dataclass(frozen=True)
class OutputAppend:
    record_id: str
    instance_id: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class TaskStart:
    record_id: str
    instance_id: str
    start_ms: int


@dataclass(frozen=True)
class HeartbeatSeen:
    instance_id: str
    time_ms: int


Report = OutputAppend | TaskStart | TaskEnd | HeartbeatSeen


@dataclass(frozen=True)
class OutputAck:
    """Tell the agent how much of a task's output (and whether its result) is stored."""

    instance_id: str
    record_id: str
    offset: int
    result_stored: bool = False
    rewind: bool = False


@dataclass(frozen=True)
class CancelOrder:
    """Tell an agent to kill (or drop) a task."""

    instance_id: str
    record_id: str
    timeout: bool = False


@dataclass(frozen=True)
class RecordEnded:
    """A record this write brought to a final state (for the log)."""

    invoke_id: str
    instance_id: str
    record_id: str
    state: str
    exit_code: int | None
    error_code: str


@dataclass
class Effects:
    """What a store write asks the rest of the server to do once it is committed."""

    acks: list[OutputAck] = field(default_factory=list)
    cancels: list[CancelOrder] = field(default_factory=list)
    # Each task names the instance it is for: nothing pairs tasks with instances by position.
    dispatches: list[Task] = field(default_factory=list)
    changed_invocations: set[str] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)  # why reports were ignored, for the log
    ended: list[RecordEnded] = field(default_factory=list)

    def merge(self, other: Effects) -> None:
        self.acks.extend(other.acks)
        self.cancels.extend(other.cancels)
        self.dispatches.extend(other.dispatches)
        self.changed_invocations |= other.changed_invocations
        self.rejected.extend(other.rejected)
        self.ended.extend(other.ended)
