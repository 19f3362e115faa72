"""Repository functions for instances and for what their agents report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Connection, bindparam, delete, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from server.domain import lifecycle, reasons
from server.domain.credentials import secret_matches
from server.domain.errors import NotFound, Unauthenticated
from server.domain.ids import new_id
from server.domain.lifecycle import ACCEPTED, DeadlinePassed, Ended, HelloHolding, HelloWithout
from server.domain.model import CommandType, Instance, OsType, RepeatMode
from server.domain.pagination import Page, split_time_cursor
from server.domain.status import ExecutionState, InvokeStatus
from server.domain.tags import TagPairs
from server.domain.tasks import EndKind, Task, TaskEnd
from server.store import convert
from server.store.invocations import (
    ACTIVE,
    MIRROR_COLUMNS,
    MIRROR_FROM,
    FirePlan,
    RecordMirror,
    insert_records,
    mirror_of,
    refresh_statuses,
    sync_invocations,
    tasks_for,
)
from server.store.output import append_chunks
from server.store.reports import (
    CancelOrder,
    Effects,
    HeartbeatSeen,
    OutputAck,
    OutputAppend,
    RecordEnded,
    Report,
    TaskStart,
)
from server.store.tables import (
    INSTANCE_TAGS,
    INSTANCES,
    INVOCATION_INSTANCES,
    INVOCATIONS,
    RECORDS,
)
from server.store.tags import having_tags, replace_agent_tags, tags_of
from server.store.transitions import change_values, orders_of

PENDING = ExecutionState.PENDING.value
RUNNING = ExecutionState.RUNNING.value
STOPPING = ExecutionState.STOPPING.value


@dataclass(frozen=True)
class AgentIdentity:
    """What an agent says of itself in its hello."""

    instance_id: str
    secret: str
    os_type: OsType
    hostname: str
    agent_version: str
    tags: dict[str, str] = field(default_factory=dict)
    boot_id: str = ""
    extra_command_types: frozenset[CommandType] = frozenset()


@dataclass(frozen=True)
class HeldTask:
    """A task an agent says it holds (in its hello)."""

    record_id: str
    output_size: int
    finished: bool


def _scope(account_id: str, region_id: str) -> list[ColumnElement[bool]]:
    return [INSTANCES.c.account_id == account_id, INSTANCES.c.region_id == region_id]


def find_instances(
    conn: Connection, account_id: str, region_id: str, instance_ids: Sequence[str]
) -> dict[str, Instance]:
    rows = conn.execute(
        select(INSTANCES).where(
            *_scope(account_id, region_id), INSTANCES.c.instance_id.in_(list(instance_ids))
        )
    ).all()
    tags = tags_of(conn, [row.instance_id for row in rows])
    return {
        row.instance_id: convert.instance(row, 0, tags.get(row.instance_id, {})) for row in rows
    }


def list_instances(
    conn: Connection,
    account_id: str,
    region_id: str,
    instance_ids: Sequence[str],
    page: Page,
    tags: TagPairs = (),
) -> tuple[list[Instance], int]:
    conditions = _scope(account_id, region_id)
    if instance_ids:
        conditions.append(INSTANCES.c.instance_id.in_(list(instance_ids)))
    conditions += having_tags(tags)
    total = conn.execute(
        select(func.count()).select_from(INSTANCES).where(*conditions)
    ).scalar_one()
    if page.after_id is not None:
        after_ms, after_instance = split_time_cursor(page.after_id)
        conditions.append(
            (INSTANCES.c.registered_ms < after_ms)
            | ((INSTANCES.c.registered_ms == after_ms) & (INSTANCES.c.instance_id < after_instance))
        )
    rows = conn.execute(
        select(INSTANCES)
        .where(*conditions)
        .order_by(INSTANCES.c.registered_ms.desc(), INSTANCES.c.instance_id.desc())
        .limit(page.size + 1)
    ).all()
    active: dict[str, int] = {}
    if rows:
        active = dict(
            conn.execute(
                select(RECORDS.c.instance_id, func.count())
                .where(
                    RECORDS.c.instance_id.in_([r.instance_id for r in rows]),
                    RECORDS.c.state.in_(ACTIVE),
                )
                .group_by(RECORDS.c.instance_id)
            ).all()
        )
    tags_by_id = tags_of(conn, [r.instance_id for r in rows])
    return [
        convert.instance(r, active.get(r.instance_id, 0), tags_by_id.get(r.instance_id, {}))
        for r in rows
    ], total


def instance_page_key(instance: Instance) -> str:
    return f"{instance.registered_ms}:{instance.instance_id}"


def deregister_instance(
    conn: Connection, account_id: str, region_id: str, instance_id: str, now_ms: int
) -> Effects:
    """Forgets the instance: its secret no longer authenticates, its runs in flight end as
    ERROR (`InstanceDeregistered`) and its scheduled runs stop. Its history stays."""
    deleted = conn.execute(
        delete(INSTANCES).where(
            *_scope(account_id, region_id), INSTANCES.c.instance_id == instance_id
        )
    )
    if deleted.rowcount == 0:
        raise NotFound(
            reasons.INSTANCE_NOT_FOUND,
            f"instance_id: no instance {instance_id!r} in region {region_id}",
            field="instance_id",
        )
    conn.execute(delete(INSTANCE_TAGS).where(INSTANCE_TAGS.c.instance_id == instance_id))
    active = [
        r.record_id
        for r in conn.execute(
            select(RECORDS.c.record_id).where(
                RECORDS.c.instance_id == instance_id, RECORDS.c.state.in_(ACTIVE)
            )
        ).all()
    ]
    conn.execute(
        update(RECORDS)
        .where(RECORDS.c.record_id.in_(active), RECORDS.c.state.in_(ACTIVE))
        .values(
            state=ExecutionState.ERROR.value,
            error_code=reasons.INSTANCE_DEREGISTERED,
            error_info="the instance was deregistered",
            finish_ms=now_ms,
            agent_done=True,
            deadline_ms=None,
        )
    )
    members = INVOCATION_INSTANCES
    conn.execute(
        update(members)
        .where(
            members.c.instance_id == instance_id,
            members.c.stopped.is_(False),
            members.c.invoke_id.in_(
                select(INVOCATIONS.c.invoke_id).where(INVOCATIONS.c.one_shot.is_(False))
            ),
        )
        .values(stopped=True, status=InvokeStatus.STOPPED.value, stop_ms=now_ms, updated_ms=now_ms)
    )
    effects = Effects()
    touched = {
        r.invoke_id
        for r in conn.execute(
            select(members.c.invoke_id).where(members.c.instance_id == instance_id)
        ).all()
    }
    effects.changed_invocations |= sync_invocations(conn, active, now_ms, effects)
    refresh_statuses(conn, touched)
    effects.changed_invocations |= touched
    return effects


def mark_offline(conn: Connection, instance_id: str, server_id: str, now_ms: int) -> None:
    """The agent left this server (unless it has connected to another one since)."""
    conn.execute(
        update(INSTANCES)
        .where(INSTANCES.c.instance_id == instance_id, INSTANCES.c.server_id == server_id)
        .values(online=False, last_heartbeat_ms=now_ms)
    )


def mark_stale_offline(
    conn: Connection, server_id: str, connected: set[str], now_ms: int
) -> list[str]:
    """Marks offline the instances online through this server but not in `connected`."""
    online_here = conn.execute(
        select(INSTANCES.c.instance_id).where(
            INSTANCES.c.server_id == server_id, INSTANCES.c.online.is_(True)
        )
    ).scalars()
    stale = sorted(set(online_here) - connected)
    if stale:
        conn.execute(
            update(INSTANCES)
            .where(
                INSTANCES.c.instance_id.in_(stale),
                INSTANCES.c.server_id == server_id,
                INSTANCES.c.online.is_(True),
            )
            .values(online=False, last_heartbeat_ms=now_ms)
        )
    return stale


def pending_tasks(conn: Connection, instance_id: str) -> list[Task]:
    """Every task of the instance that waits for delivery (PENDING), oldest first."""
    rows = conn.execute(
        select(RECORDS)
        .where(
            RECORDS.c.instance_id == instance_id,
            RECORDS.c.state == PENDING,
            RECORDS.c.held.is_(False),  # waiting for a place under max_concurrency
        )
        .order_by(RECORDS.c.record_id)
    ).all()
    return tasks_for(conn, rows)


def agent_hello(
    conn: Connection,
    agent: AgentIdentity,
    held: Sequence[HeldTask],
    now_ms: int,
    server_id: str = "",
) -> tuple[Effects, list[tuple[str, int, bool]]]:
    """Authenticates the instance, marks it online and reconciles the tasks the agent holds.

    Returns the effects (re-dispatch of PENDING records, cancels, state changes) and the
    acknowledgements for the welcome message: (task id, stored offset, result stored).
    Raises Unauthenticated for an unknown instance or a wrong secret.
    """
    instance_id = agent.instance_id
    stored = conn.execute(
        select(INSTANCES.c.secret_hash).where(INSTANCES.c.instance_id == instance_id)
    ).scalar_one_or_none()
    if not secret_matches(agent.secret, stored):
        raise Unauthenticated(
            reasons.INVALID_INSTANCE_CREDENTIALS,
            f"hello: instance {instance_id!r} is not registered, or its secret is wrong; "
            "register the agent with an activation",
            field="hello.instance_secret",
        )
    conn.execute(
        update(INSTANCES)
        .where(INSTANCES.c.instance_id == instance_id)
        .values(
            os_type=agent.os_type.value,
            hostname=agent.hostname,
            agent_version=agent.agent_version,
            online=True,
            server_id=server_id,
            last_heartbeat_ms=now_ms,
            boot_id=agent.boot_id,
            extra_command_types=json.dumps(sorted(t.value for t in agent.extra_command_types)),
        )
    )
    replace_agent_tags(conn, instance_id, agent.tags)
    booted = fire_on_boot(conn, instance_id, agent.boot_id, now_ms)
    effects = Effects()
    held_ids = [t.record_id for t in held]
    known = {
        r.record_id: r
        for r in conn.execute(
            select(RECORDS).where(
                RECORDS.c.record_id.in_(held_ids), RECORDS.c.instance_id == instance_id
            )
        ).all()
    }
    acks: list[tuple[str, int, bool]] = []
    changed: list[str] = []
    for task in held:
        row = known.get(task.record_id)
        if row is None:
            # The server has no such task for this instance: the agent should forget it.
            acks.append((task.record_id, task.output_size, True))
            if not task.finished:
                effects.cancels.append(CancelOrder(instance_id, task.record_id))
            continue
        acks.append((task.record_id, row.output_size, bool(row.agent_done)))
        state = ExecutionState(row.state)
        change = lifecycle.on(state, HelloHolding(task.finished))
        if change is None:
            continue
        if change.state is not state:
            # The agent took it but its task_accepted was lost: it runs from now.
            timeout = conn.execute(
                select(INVOCATIONS.c.timeout_seconds).where(
                    INVOCATIONS.c.invoke_id == row.invoke_id
                )
            ).scalar_one()
            conn.execute(
                update(RECORDS)
                .where(RECORDS.c.record_id == row.record_id, RECORDS.c.state == state.value)
                .values(**change_values(change, now_ms, now_ms + timeout * 1000))
            )
            changed.append(row.record_id)
        effects.cancels.extend(orders_of(change, instance_id, row.record_id))
    lost = conn.execute(
        select(RECORDS.c.record_id, RECORDS.c.state).where(
            RECORDS.c.instance_id == instance_id,
            RECORDS.c.state.in_([RUNNING, STOPPING]),
            RECORDS.c.record_id.not_in(held_ids),
        )
    ).all()
    for record_id, state in lost:
        # The agent does not know a task the server thinks is running: it restarted.
        change = lifecycle.on(ExecutionState(state), HelloWithout())
        assert change is not None, "a running or stopping record the agent lost ends"
        conn.execute(
            update(RECORDS)
            .where(RECORDS.c.record_id == record_id, RECORDS.c.state == state)
            .values(**change_values(change, now_ms))
        )
        changed.append(record_id)
    pending = conn.execute(
        select(RECORDS)
        .where(
            RECORDS.c.instance_id == instance_id,
            RECORDS.c.state == PENDING,
            RECORDS.c.held.is_(False),
            RECORDS.c.record_id.not_in(held_ids),
        )
        .order_by(RECORDS.c.record_id)
    ).all()
    effects.dispatches.extend(tasks_for(conn, pending))
    effects.changed_invocations |= sync_invocations(conn, [*changed, *booted], now_ms, effects)
    return effects, acks


def fire_on_boot(conn: Connection, instance_id: str, boot_id: str, now_ms: int) -> list[str]:
    """Records for the reboot-mode invocations of an instance whose agent reports a boot id
    other than the one they last saw (the instance has booted since). A member that has seen
    none yet (its agent never said) takes this one without running. Returns the new records'
    ids (PENDING: the hello sends them)."""
    if not boot_id:
        return []
    members = INVOCATION_INSTANCES
    rows = conn.execute(
        select(
            members.c.invoke_id,
            members.c.boot_id,
            members.c.repeats,
            members.c.latest_record_id,
            INVOCATIONS.c.repeat_mode,
            INVOCATIONS.c.delivery_timeout_ms,
            INVOCATIONS.c.output_limit,
        )
        .select_from(members.join(INVOCATIONS, INVOCATIONS.c.invoke_id == members.c.invoke_id))
        .where(
            members.c.instance_id == instance_id,
            members.c.stopped.is_(False),
            members.c.boot_id != boot_id,
            INVOCATIONS.c.repeat_mode.in_(
                [RepeatMode.NEXT_REBOOT_ONLY.value, RepeatMode.EVERY_REBOOT.value]
            ),
        )
    ).all()
    created: list[str] = []
    for row in rows:
        values: dict[str, object] = {"boot_id": boot_id, "updated_ms": now_ms}
        first_run_done = row.latest_record_id is not None
        once = row.repeat_mode == RepeatMode.NEXT_REBOOT_ONLY.value
        if row.boot_id and not (once and first_run_done):
            record_id = new_id("r", now_ms)
            plan = FirePlan(now_ms, now_ms + row.delivery_timeout_ms, row.output_limit)
            insert_records(conn, row.invoke_id, {instance_id: record_id}, row.repeats + 1, plan)
            values |= {"latest_record_id": record_id, "repeats": row.repeats + 1}
            created.append(record_id)
        conn.execute(
            update(members)
            .where(members.c.invoke_id == row.invoke_id, members.c.instance_id == instance_id)
            .values(**values)
        )
    return created


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
        for row in conn.execute(
            select(
                *MIRROR_COLUMNS,
                RECORDS.c.output_size,
                RECORDS.c.output_limit,
                RECORDS.c.agent_done,
                INVOCATIONS.c.timeout_seconds,
            )
            .select_from(MIRROR_FROM)
            .where(RECORDS.c.record_id.in_(record_ids))
            .order_by(RECORDS.c.record_id)
            # Serialises writers of the same records across servers (PostgreSQL; SQLite has
            # one writer anyway).
            .with_for_update(of=RECORDS)
        ).all():
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


def earliest_deadline_ms(conn: Connection) -> int | None:
    """The earliest deadline of any record (None: no record has one)."""
    value = conn.execute(select(func.min(RECORDS.c.deadline_ms))).scalar_one()
    return int(value) if value is not None else None


def expire_due(conn: Connection, now_ms: int, limit: int = 500) -> Effects:
    """Applies every deadline that has passed: delivery, execution and stop confirmation."""
    rows = conn.execute(
        select(
            RECORDS.c.record_id,
            RECORDS.c.instance_id,
            RECORDS.c.state,
            INVOCATIONS.c.timeout_seconds,
            RECORDS.c.invoke_id,
        )
        .select_from(RECORDS.join(INVOCATIONS, RECORDS.c.invoke_id == INVOCATIONS.c.invoke_id))
        .where(RECORDS.c.deadline_ms <= now_ms)
        .order_by(RECORDS.c.deadline_ms)
        .limit(limit)
        # Each expiry happens once even with several servers sweeping (PostgreSQL).
        .with_for_update(skip_locked=True, of=RECORDS)
    ).all()
    effects = Effects()
    if not rows:
        return effects
    online = {
        r.instance_id
        for r in conn.execute(
            select(INSTANCES.c.instance_id).where(
                INSTANCES.c.instance_id.in_({r.instance_id for r in rows}),
                INSTANCES.c.online.is_(True),
            )
        ).all()
    }
    changed = []
    for record_id, instance_id, state, timeout_seconds, invoke_id in rows:
        before = ExecutionState(state)
        change = lifecycle.on(before, DeadlinePassed(instance_id in online, timeout_seconds))
        assert change is not None, "a passed deadline always changes the record"
        if change.state is before:
            # Terminal with a stray deadline: clear it.
            conn.execute(
                update(RECORDS).where(RECORDS.c.record_id == record_id).values(deadline_ms=None)
            )
            continue
        expired = conn.execute(
            update(RECORDS)
            .where(RECORDS.c.record_id == record_id, RECORDS.c.state == state)
            .values(**change_values(change, now_ms))
        )
        if expired.rowcount != 1:
            continue  # something else ended it first
        effects.cancels.extend(orders_of(change, instance_id, record_id))
        changed.append(record_id)
        effects.ended.append(
            RecordEnded(
                invoke_id, instance_id, record_id, change.state.value, None, change.error_code
            )
        )
    effects.changed_invocations |= sync_invocations(conn, changed, now_ms, effects)
    return effects
