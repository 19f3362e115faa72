"""Repository functions that store a batch of agent reports (output, starts, results,
heartbeats) in one transaction, each kind of row change written once for the whole batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Connection, bindparam, func, or_, select, update

from cloudassist.server.domain import lifecycle
from cloudassist.server.domain.lifecycle import ACCEPTED, Ended
from cloudassist.server.domain.reports import (
    Effects,
    HeartbeatSeen,
    OutputAck,
    OutputAppend,
    RecordEnded,
    Report,
    TaskStart,
)
from cloudassist.server.domain.status import ExecutionState
from cloudassist.server.domain.tasks import EndKind, TaskEnd
from cloudassist.server.store.invocations import ACTIVE
from cloudassist.server.store.output import append_chunks
from cloudassist.server.store.rollup import (
    MIRROR_COLUMNS,
    MIRROR_FROM,
    RecordMirror,
    mirror_of,
    sync_invocations,
)
from cloudassist.server.store.tables import INSTANCES, INVOCATIONS, RECORDS
from cloudassist.server.store.transitions import orders_of

PENDING = ExecutionState.PENDING.value
RUNNING = ExecutionState.RUNNING.value


@dataclass
class _Progress:
    """A record as the batch finds it and changes it."""

    size: int
    limit: int
    timeout_seconds: int
    agent_done: bool
    # What its invocation instance copies from it (kept up to date as the batch writes it).
    mirror: RecordMirror

    @property
    def instance_id(self) -> str:
        return self.mirror.instance_id

    @property
    def invoke_id(self) -> str:
        return self.mirror.invoke_id

    @property
    def state(self) -> str:
        return self.mirror.state


# The batch's writes, built once: one executemany each, whatever the batch holds.
_START = (
    update(RECORDS)
    .where(RECORDS.c.record_id == bindparam("b_record_id"), RECORDS.c.state == PENDING)
    .values(
        state=RUNNING,
        start_ms=bindparam("b_start_ms"),
        deadline_ms=bindparam("b_deadline_ms"),
    )
)


_END = (
    update(RECORDS)
    # Not `in_`: its expanding parameter cannot be used with executemany.
    .where(
        RECORDS.c.record_id == bindparam("b_record_id"),
        or_(*(RECORDS.c.state == state for state in ACTIVE)),
    )
    .values(
        state=bindparam("b_state"),
        error_code=bindparam("b_error_code"),
        error_info=bindparam("b_error_info"),
        exit_code=bindparam("b_exit_code"),
        dropped=bindparam("b_dropped"),
        agent_done=True,
        deadline_ms=None,
        finish_ms=bindparam("b_finish_ms"),
        start_ms=func.coalesce(RECORDS.c.start_ms, bindparam("b_start_ms")),
        stop_ms=func.coalesce(bindparam("b_stop_ms"), RECORDS.c.stop_ms),
    )
)


# The server already decided (timeout, stop): keep that state, complete the accounting.
_LATE_END = (
    update(RECORDS)
    .where(RECORDS.c.record_id == bindparam("b_record_id"))
    .values(
        dropped=bindparam("b_dropped"),
        agent_done=True,
        exit_code=func.coalesce(RECORDS.c.exit_code, bindparam("b_exit_code")),
    )
)


_SIZES = update(RECORDS).where(RECORDS.c.record_id == bindparam("b_record_id"))

_HEARTBEATS = update(INSTANCES).where(INSTANCES.c.instance_id == bindparam("b_instance_id"))


# Where each reported record stands (built once: every batch of reports reads it).
_PROGRESS = (
    select(
        *MIRROR_COLUMNS,
        RECORDS.c.output_size,
        RECORDS.c.output_limit,
        RECORDS.c.agent_done,
        INVOCATIONS.c.timeout_seconds,
    )
    .select_from(MIRROR_FROM)
    .where(RECORDS.c.record_id.in_(bindparam("p_record_ids", expanding=True)))
    .order_by(RECORDS.c.record_id)
    # Serialises writers of the same records across servers (PostgreSQL; SQLite has one
    # writer anyway).
    .with_for_update(of=RECORDS)
)


@dataclass
class _Writes:
    """The row changes of one batch, gathered to be written together."""

    # record id -> the start's values (dropped again when the record ends in the same batch)
    starts: dict[str, dict[str, object]] = field(default_factory=dict)
    ends: list[dict[str, object]] = field(default_factory=list)
    late_ends: list[dict[str, object]] = field(default_factory=list)

    def flush(self, conn: Connection) -> None:
        if self.starts:
            conn.execute(_START, list(self.starts.values()))
        if self.ends:
            conn.execute(_END, self.ends)
        if self.late_ends:
            conn.execute(_LATE_END, self.late_ends)


def apply_reports(conn: Connection, reports: Sequence[Report], now_ms: int) -> Effects:
    """Stores a batch of agent reports in order, in one transaction.

    Output is appended only at a record's current length (replays are idempotent) and only up
    to its limit. A result is stored only once all output before it is; otherwise the agent is
    told to rewind. The batch's changes to records are written together at the end (a record
    that starts and ends in the batch is written once).
    """
    effects = Effects()
    record_ids = {r.record_id for r in reports if not isinstance(r, HeartbeatSeen)}
    progress: dict[str, _Progress] = {}
    if record_ids:
        for row in conn.execute(_PROGRESS, {"p_record_ids": sorted(record_ids)}).all():
            progress[row.record_id] = _Progress(
                row.output_size,
                row.output_limit,
                row.timeout_seconds,
                bool(row.agent_done),
                mirror_of(row),
            )
    chunks: dict[str, tuple[int, list[bytes]]] = {}
    acks: dict[str, OutputAck] = {}
    changed: list[str] = []
    heartbeats: dict[str, int] = {}
    writes = _Writes()

    for report in reports:
        if isinstance(report, HeartbeatSeen):
            heartbeats[report.instance_id] = report.time_ms
            continue
        p = progress.get(report.record_id)
        if p is None or p.instance_id != report.instance_id:
            owner = f" (a task of instance {p.instance_id!r})" if p is not None else ""
            effects.rejected.append(
                f"instance {report.instance_id!r} reported on task {report.record_id!r}"
                f"{owner}, which is not one of its tasks: refused"
            )
            if p is not None and isinstance(report, TaskEnd):
                # Never applied; the agent is told it may forget the task, or it would send
                # the result again after every reconnect.
                effects.acks.append(
                    OutputAck(
                        report.instance_id,
                        report.record_id,
                        report.output_size,
                        result_stored=True,
                    )
                )
            continue
        if isinstance(report, OutputAppend):
            end = report.offset + len(report.data)
            if report.offset > p.size:
                effects.rejected.append(
                    f"task {report.record_id!r}: output at offset {report.offset} but only "
                    f"{p.size} bytes are stored"
                )
            elif end > p.size and p.size < p.limit:
                piece = report.data[p.size - report.offset :][: p.limit - p.size]
                _, parts = chunks.setdefault(report.record_id, (p.size, []))
                parts.append(piece)
                p.size += len(piece)
            acks[report.record_id] = OutputAck(p.instance_id, report.record_id, p.size)
        elif isinstance(report, TaskStart):
            change = lifecycle.on(ExecutionState(p.state), ACCEPTED)
            if change is None:
                continue
            if change.state.value != p.state:
                writes.starts[report.record_id] = {
                    "b_record_id": report.record_id,
                    "b_start_ms": report.start_ms,
                    "b_deadline_ms": now_ms + p.timeout_seconds * 1000,
                }
                p.mirror.state = change.state.value
                p.mirror.start_ms = report.start_ms
                changed.append(report.record_id)
            # Stopped or expired before the agent took it: the agent must drop it.
            effects.cancels.extend(orders_of(change, p.instance_id, report.record_id))
        else:
            _apply_end(report, p, effects, acks, changed, writes)

    writes.flush(conn)
    append_chunks(conn, [(rid, start, b"".join(parts)) for rid, (start, parts) in chunks.items()])
    sizes = [{"b_record_id": rid, "output_size": progress[rid].size} for rid in chunks]
    if sizes:
        conn.execute(_SIZES, sizes)
    if heartbeats:
        conn.execute(
            _HEARTBEATS,
            [{"b_instance_id": i, "last_heartbeat_ms": t} for i, t in heartbeats.items()],
        )
    effects.acks.extend(acks.values())
    effects.changed_invocations |= {progress[rid].invoke_id for rid in chunks}
    known = {rid: progress[rid].mirror for rid in changed}
    effects.changed_invocations |= sync_invocations(conn, changed, now_ms, effects, known)
    return effects


def _apply_end(
    end: TaskEnd,
    p: _Progress,
    effects: Effects,
    acks: dict[str, OutputAck],
    changed: list[str],
    writes: _Writes,
) -> None:
    expected = min(end.output_size, p.limit)
    if p.size < expected:
        # Some output before the result never arrived (a lost chunk): ask for it again.
        acks[end.record_id] = OutputAck(p.instance_id, end.record_id, p.size, rewind=True)
        return
    acks[end.record_id] = OutputAck(p.instance_id, end.record_id, p.size, result_stored=True)
    if p.agent_done:
        return
    dropped = max(0, end.output_size - p.size)
    exit_code = end.exit_code if end.kind is not EndKind.ERROR else None
    change = lifecycle.on(ExecutionState(p.state), Ended(end))
    if change is not None:
        # A start in the same batch is not written on its own: this write takes its time
        # (which comes first, as it would had it been written).
        start = writes.starts.pop(end.record_id, None)
        start_ms = cast(int, start["b_start_ms"]) if start is not None else end.start_ms
        stopped = change.stopped
        writes.ends.append(
            {
                "b_record_id": end.record_id,
                "b_state": change.state.value,
                "b_error_code": change.error_code,
                "b_error_info": change.error_info,
                "b_exit_code": exit_code,
                "b_dropped": dropped,
                "b_finish_ms": end.time_ms,
                "b_start_ms": start_ms,
                "b_stop_ms": end.time_ms if stopped else None,
            }
        )
        m = p.mirror
        m.state = change.state.value
        m.error_code = change.error_code
        m.error_info = change.error_info
        m.exit_code = exit_code
        m.finish_ms = end.time_ms
        m.start_ms = m.start_ms if m.start_ms is not None else start_ms
        m.stop_ms = end.time_ms if stopped else m.stop_ms
        changed.append(end.record_id)
        effects.ended.append(
            RecordEnded(
                p.invoke_id,
                p.instance_id,
                end.record_id,
                p.state,
                exit_code,
                change.error_code,
            )
        )
    else:
        writes.late_ends.append(
            {"b_record_id": end.record_id, "b_dropped": dropped, "b_exit_code": exit_code}
        )
        if p.mirror.exit_code is None:
            p.mirror.exit_code = exit_code
        changed.append(end.record_id)
    p.agent_done = True
