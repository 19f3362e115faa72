"""The agent stream's messages <-> the hub's and the recorder's terms, for both protocols.

Protocol 1 has one message per event; protocol 2 packs what is ready into one message each
way (`orders` down, `reports` up). Pure functions: no stream, no store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from cloudassist.common.clock import now_ms
from cloudassist.server.api import convert
from cloudassist.server.domain.reports import (
    CancelOrder,
    OutputAck,
    OutputAppend,
    Report,
    TaskStart,
)
from cloudassist.server.domain.tasks import EndKind, Task, TaskEnd
from cloudassist.server.fleet.hub import Beat, Outgoing
from cloudassist.v1 import agent_pb2 as pb

# The newest protocol this server speaks.
PROTOCOL = 2
# An `orders` message holds at most this many dispatches, or this many script bytes (agents
# accept messages of 8 MiB; a script is at most a few tens of KB).
MAX_DISPATCHES_PER_MESSAGE = 256
MAX_SCRIPT_BYTES_PER_MESSAGE = 2 * 1024 * 1024


def negotiate(agent_protocol: int) -> int:
    """The protocol of a stream whose agent speaks up to `agent_protocol` (0: protocol 1)."""
    return max(1, min(agent_protocol, PROTOCOL))


def _ms(ts: Timestamp, default: int) -> int:
    """An agent's time, or `default` when it sent none (or one out of range)."""
    if not (ts.seconds or ts.nanos):
        return default
    try:
        return ts.ToMilliseconds()
    except (ValueError, OverflowError):
        return default


# Server to agent ---------------------------------------------------------------------------


def _file_push(task: Task) -> pb.FilePush | None:
    file = task.file
    if file is None:
        return None
    return pb.FilePush(
        name=file.name,
        target_dir=file.target_dir,
        mode=file.mode,
        owner=file.owner,
        group=file.group,
        overwrite=file.overwrite,
    )


def dispatch_to(task: Task) -> pb.Dispatch:
    return pb.Dispatch(
        task_id=task.task_id,
        instance_id=task.instance_id,
        invoke_id=task.invoke_id,
        command_id=task.command_id,
        command_type=convert.command_type_to(task.command_type),
        script=task.script,
        timeout_seconds=task.timeout_seconds,
        working_dir=task.working_dir,
        username=task.username,
        output_limit=task.output_limit,
        env=task.env,
        launcher=task.launcher,
        file=_file_push(task),
    )


def cancel_to(order: CancelOrder) -> pb.Cancel:
    reason = pb.STOP_REASON_TIMEOUT if order.timeout else pb.STOP_REASON_STOP
    return pb.Cancel(task_id=order.record_id, reason=reason)


def ack_to(ack: OutputAck) -> pb.Ack:
    return pb.Ack(
        task_id=ack.record_id,
        offset=ack.offset,
        result_stored=ack.result_stored,
        rewind=ack.rewind,
    )


def outgoing_to(item: Outgoing) -> pb.ConnectResponse:
    """Protocol 1: one message per item."""
    if isinstance(item, Task):
        return pb.ConnectResponse(dispatch=dispatch_to(item))
    if isinstance(item, CancelOrder):
        return pb.ConnectResponse(cancel=cancel_to(item))
    if isinstance(item, OutputAck):
        return pb.ConnectResponse(ack=ack_to(item))
    if isinstance(item, Beat):
        beat = pb.Heartbeat()
        beat.time.FromMilliseconds(now_ms())
        return pb.ConnectResponse(heartbeat=beat)
    return pb.ConnectResponse(reconnect=pb.Reconnect(reason=item.reason))


@dataclass
class _Orders:
    dispatches: list[Task]
    cancels: list[CancelOrder]
    acks: dict[str, OutputAck]
    script_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.dispatches or self.cancels or self.acks)

    def message(self) -> pb.ConnectResponse:
        return pb.ConnectResponse(
            orders=pb.Orders(
                dispatches=[dispatch_to(t) for t in self.dispatches],
                cancels=[cancel_to(c) for c in self.cancels],
                acks=[ack_to(a) for a in self.acks.values()],
            )
        )


def _new_orders() -> _Orders:
    return _Orders([], [], {})


def batched(items: Iterable[Outgoing]) -> Iterator[pb.ConnectResponse]:
    """Protocol 2: consecutive dispatches, cancels and acks in as few `orders` as keep their
    meaning. The agent applies an `orders` message's dispatches, then its cancels, then its
    acks, so a dispatch queued after a cancel starts a new message (the cancel may be for it);
    acks of one task keep only the newest (each says all that is stored). Beats and drains
    are messages of their own, in their place."""
    current = _new_orders()
    for item in items:
        if isinstance(item, Task):
            full = (
                len(current.dispatches) >= MAX_DISPATCHES_PER_MESSAGE
                or current.script_bytes + len(item.script) > MAX_SCRIPT_BYTES_PER_MESSAGE
            )
            if current.cancels or (full and current):
                yield current.message()
                current = _new_orders()
            current.dispatches.append(item)
            current.script_bytes += len(item.script)
        elif isinstance(item, CancelOrder):
            current.cancels.append(item)
        elif isinstance(item, OutputAck):
            # Re-inserted at the end: the newest ack of a task is the one that counts.
            current.acks.pop(item.record_id, None)
            current.acks[item.record_id] = item
        else:
            if current:
                yield current.message()
                current = _new_orders()
            yield outgoing_to(item)
    if current:
        yield current.message()


# Agent to server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """An agent took a task; `held_seconds` it waited before saying so (protocol 2)."""

    task_id: str
    held_seconds: float


def _finished(f: pb.TaskFinished, task_id: str, instance_id: str, now: int) -> TaskEnd:
    return TaskEnd(
        task_id,
        instance_id,
        EndKind.FINISHED,
        f.exit_code,
        max(0, f.output_size),
        _ms(f.finish_time, now),
        start_ms=_ms(f.start_time, now),
    )


def _stopped(s: pb.TaskStopped, task_id: str, instance_id: str, now: int) -> TaskEnd:
    end_kind = EndKind.TIMED_OUT if s.reason == pb.STOP_REASON_TIMEOUT else EndKind.STOPPED
    return TaskEnd(
        task_id,
        instance_id,
        end_kind,
        s.exit_code if s.started else None,
        max(0, s.output_size),
        _ms(s.stop_time, now),
        started=s.started,
    )


def _error(e: pb.TaskError, task_id: str, instance_id: str, now: int) -> TaskEnd:
    return TaskEnd(
        task_id,
        instance_id,
        EndKind.ERROR,
        None,
        max(0, e.output_size),
        now,
        started=False,
        error_code=e.error_code[:64],
        error_info=e.error_info[:1024],
    )


@dataclass
class Decoded:
    """What one agent message says, in the recorder's terms."""

    reports: list[Report]
    accepted: list[Accepted]
    output_bytes: int = 0
    # Why parts were ignored (for the log).
    ignored: list[str] | None = None


def _task_report(report: pb.TaskReport, instance_id: str, now: int, into: Decoded) -> None:
    task_id = report.task_id
    if report.HasField("accepted_time"):
        into.accepted.append(Accepted(task_id, report.accept_held_ms / 1000))
        into.reports.append(TaskStart(task_id, instance_id, _ms(report.accepted_time, now)))
    if report.data:
        if report.offset < 0:
            into.ignored = [*(into.ignored or []), f"output of {task_id} at a negative offset"]
        else:
            into.output_bytes += len(report.data)
            into.reports.append(OutputAppend(task_id, instance_id, report.offset, report.data))
    kind = report.WhichOneof("result")
    if kind == "finished":
        into.reports.append(_finished(report.finished, task_id, instance_id, now))
    elif kind == "stopped":
        into.reports.append(_stopped(report.stopped, task_id, instance_id, now))
    elif kind == "error":
        into.reports.append(_error(report.error, task_id, instance_id, now))


# The messages that carry reports (protocol 1's, then protocol 2's).
REPORT_KINDS = frozenset(
    {"task_accepted", "output", "task_finished", "task_stopped", "task_error", "reports"}
)


def decode(message: pb.ConnectRequest, kind: str | None, instance_id: str, now: int) -> Decoded:
    """The reports in a message of either protocol (heartbeats and hellos carry none)."""
    into = Decoded([], [])
    if kind == "reports":
        for report in message.reports.tasks:
            _task_report(report, instance_id, now, into)
    elif kind == "task_accepted":
        m = message.task_accepted
        into.accepted.append(Accepted(m.task_id, 0.0))
        into.reports.append(TaskStart(m.task_id, instance_id, _ms(m.start_time, now)))
    elif kind == "output":
        out = message.output
        if out.offset < 0:
            into.ignored = [f"output of {out.task_id} at a negative offset"]
        else:
            into.output_bytes = len(out.data)
            into.reports.append(OutputAppend(out.task_id, instance_id, out.offset, out.data))
    elif kind == "task_finished":
        f = message.task_finished
        into.reports.append(_finished(f, f.task_id, instance_id, now))
    elif kind == "task_stopped":
        s = message.task_stopped
        into.reports.append(_stopped(s, s.task_id, instance_id, now))
    elif kind == "task_error":
        e = message.task_error
        into.reports.append(_error(e, e.task_id, instance_id, now))
    return into
