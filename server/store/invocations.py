"""Repository functions for invocations, their instances and records."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from server.domain import lifecycle, reasons
from server.domain.accounts import AuditEntry, naming_also
from server.domain.errors import FailedPrecondition, NotFound, ResourceExhausted
from server.domain.files import FileSpec
from server.domain.lifecycle import STOP_ASKED, ErrorBudgetSpent
from server.domain.model import (
    CommandSpec,
    Invocation,
    InvocationSpec,
    OutputSlice,
    Record,
    RepeatMode,
)
from server.domain.pagination import Page
from server.domain.rate_control import ERROR_STATES, error_budget_spent, released
from server.domain.status import (
    ACTIVE_STATES,
    ExecutionState,
    InvokeStatus,
    coarse_status,
    overall_status,
    states_with_status,
)
from server.domain.tasks import Task, build_task
from server.store import convert
from server.store.commands import check_command_quota, count_invocation, store_command
from server.store.idempotency import IdempotencyKey, remember, replay
from server.store.locks import lock_scope
from server.store.output import read_range, read_ranges
from server.store.reports import Effects
from server.store.search import contains_text
from server.store.security import record_audit
from server.store.tables import (
    INSTANCES,
    INVOCATION_INSTANCES,
    INVOCATIONS,
    RECORDS,
)
from server.store.transitions import change_values, orders_of

ACTIVE = [s.value for s in ACTIVE_STATES]
PENDING_STATE = ExecutionState.PENDING
RESULT_OUTPUT_TAIL = 24 * 1024


@dataclass(frozen=True)
class InvocationPlan:
    """Everything create_invocation writes, decided before the transaction."""

    account_id: str
    invoke_id: str
    spec: InvocationSpec
    record_ids: dict[str, str]  # instance id -> record id
    now_ms: int
    day_start_ms: int
    daily_quota: int
    delivery_deadline_ms: int
    output_limit: int
    idempotency: IdempotencyKey | None
    # RunCommand with keep_command: the command is saved in the same transaction.
    new_command: CommandSpec | None = None
    command_quota: int = 0
    # A periodic invocation has no records until its first fire.
    one_shot: bool = True
    next_fire_ms: int | None = None
    # The call's audit row, written in this transaction rather than in one of its own.
    audit: AuditEntry | None = None


def _not_found(invoke_id: str, region_id: str) -> NotFound:
    return NotFound(
        reasons.INVOCATION_NOT_FOUND,
        f"invoke_id: no invocation {invoke_id!r} in region {region_id}",
        field="invoke_id",
    )


def _scope(account_id: str, region_id: str) -> list[ColumnElement[bool]]:
    return [INVOCATIONS.c.account_id == account_id, INVOCATIONS.c.region_id == region_id]


def check_invocation_quota(
    conn: Connection, account_id: str, region_id: str, day_start_ms: int, quota: int
) -> None:
    count = conn.execute(
        select(func.count())
        .select_from(INVOCATIONS)
        .where(*_scope(account_id, region_id), INVOCATIONS.c.created_ms >= day_start_ms)
    ).scalar_one()
    if count >= quota:
        raise ResourceExhausted(
            reasons.INVOCATION_EXCEED_QUOTA,
            f"region {region_id} has made {count} invocations today, the daily quota is {quota}",
            field="region_id",
            metadata={"quota": str(quota), "region_id": region_id},
        )


def create_invocation(conn: Connection, plan: InvocationPlan) -> tuple[dict[str, str], Effects]:
    """Stores an invocation with one PENDING record per instance (none yet when scheduled).

    Returns the ids (those of the first request when a client_token is retried) and the
    effects: the tasks to dispatch now, each naming its instance (none on a retry).
    """
    lock_scope(conn, plan.account_id, plan.spec.region_id)
    previous = replay(conn, plan.idempotency)
    if previous is not None:
        _audit(conn, plan, previous)
        return previous, Effects()
    spec = plan.spec
    account_id = plan.account_id
    if plan.new_command is not None:
        check_command_quota(conn, account_id, spec.region_id, plan.command_quota)
    check_invocation_quota(conn, account_id, spec.region_id, plan.day_start_ms, plan.daily_quota)
    if plan.new_command is not None:
        store_command(conn, account_id, spec.command_id, plan.new_command, plan.now_ms)
    status = InvokeStatus.RUNNING.value
    conn.execute(
        insert(INVOCATIONS).values(
            invoke_id=plan.invoke_id,
            account_id=account_id,
            region_id=spec.region_id,
            command_id=spec.command_id,
            command_name=spec.command_name,
            command_type=spec.command_type.value,
            content=spec.content,
            enable_parameter=spec.enable_parameter,
            parameters=json.dumps(spec.parameters, sort_keys=True),
            repeat_mode=spec.repeat_mode.value,
            frequency=spec.frequency,
            timeout_seconds=spec.timeout_seconds,
            working_dir=spec.working_dir,
            username=spec.username,
            env=json.dumps(spec.env, sort_keys=True),
            launcher=spec.launcher,
            max_concurrency=spec.max_concurrency,
            max_errors=spec.max_errors,
            delivery_timeout_ms=plan.delivery_deadline_ms - plan.now_ms,
            output_limit=plan.output_limit,
            file=json.dumps(asdict(spec.file)) if spec.file is not None else "",
            status=status,
            one_shot=plan.one_shot,
            next_fire_ms=plan.next_fire_ms,
            created_ms=plan.now_ms,
        )
    )
    pending = ExecutionState.PENDING.value
    boot_ids = dict(
        conn.execute(
            select(INSTANCES.c.instance_id, INSTANCES.c.boot_id).where(
                INSTANCES.c.instance_id.in_(spec.instance_ids)
            )
        ).all()
    )
    conn.execute(
        insert(INVOCATION_INSTANCES),
        [
            {
                "invoke_id": plan.invoke_id,
                "instance_id": instance_id,
                "state": pending,
                "status": status,
                "repeats": 1 if plan.record_ids else 0,
                "stopped": False,
                "latest_record_id": plan.record_ids.get(instance_id),
                "boot_id": boot_ids.get(instance_id, ""),
                "created_ms": plan.now_ms,
                "updated_ms": plan.now_ms,
            }
            for instance_id in spec.instance_ids
        ],
    )
    # Under max_concurrency, the targets past the first ones wait, unsent (in instance order).
    first = released(spec.max_concurrency, 0, len(plan.record_ids))
    held = set(sorted(plan.record_ids)[first:])
    if plan.record_ids:
        insert_records(conn, plan.invoke_id, plan.record_ids, 1, plan, held)
    count_invocation(conn, spec.command_id)
    conn.execute(
        update(INSTANCES)
        .where(INSTANCES.c.instance_id.in_(spec.instance_ids))
        .values(invocation_count=INSTANCES.c.invocation_count + 1, last_invoked_ms=plan.now_ms)
    )
    result = {"invoke_id": plan.invoke_id, "command_id": spec.command_id}
    remember(conn, plan.idempotency, result, plan.now_ms)
    _audit(conn, plan, result)
    effects = Effects(
        dispatches=[
            build_task(record_id, instance_id, plan.invoke_id, spec, plan.output_limit)
            for instance_id, record_id in plan.record_ids.items()
            if instance_id not in held
        ]
    )
    if plan.record_ids:
        effects.changed_invocations.add(plan.invoke_id)
    return result, effects


def _audit(conn: Connection, plan: InvocationPlan, result: dict[str, str]) -> None:
    if plan.audit is not None:
        record_audit(conn, naming_also(plan.audit, result["invoke_id"], result["command_id"]))


def insert_records(
    conn: Connection,
    invoke_id: str,
    record_ids: dict[str, str],
    repeats: int | dict[str, int],
    plan: InvocationPlan | FirePlan,
    held: set[str] | frozenset[str] = frozenset(),
) -> None:
    """PENDING records (one per instance id in `record_ids`) with their delivery deadline;
    those of the instances in `held` wait unsent, with no deadline yet."""
    pending = ExecutionState.PENDING.value
    conn.execute(
        insert(RECORDS),
        [
            {
                "record_id": record_id,
                "invoke_id": invoke_id,
                "instance_id": instance_id,
                "state": pending,
                "output_size": 0,
                "output_limit": plan.output_limit,
                "dropped": 0,
                "agent_done": False,
                "repeats": repeats if isinstance(repeats, int) else repeats[instance_id],
                "created_ms": plan.now_ms,
                "deadline_ms": None if instance_id in held else plan.delivery_deadline_ms,
                "held": instance_id in held,
            }
            for instance_id, record_id in record_ids.items()
        ],
    )


@dataclass(frozen=True)
class FirePlan:
    """What a scheduled fire needs to create its records."""

    now_ms: int
    delivery_deadline_ms: int
    output_limit: int


def instances_of(conn: Connection, invoke_ids: list[str]) -> dict[str, list[object]]:
    rows = conn.execute(
        select(INVOCATION_INSTANCES)
        .where(INVOCATION_INSTANCES.c.invoke_id.in_(invoke_ids))
        .order_by(INVOCATION_INSTANCES.c.instance_id)
    ).all()
    grouped: dict[str, list[object]] = defaultdict(list)
    for row in rows:
        grouped[row.invoke_id].append(row)
    return grouped


def _invocations(conn: Connection, rows: list[object]) -> list[Invocation]:
    instances = instances_of(conn, [r.invoke_id for r in rows])  # type: ignore[attr-defined]
    result = []
    for row in rows:
        members = instances.get(row.invoke_id, [])  # type: ignore[attr-defined]
        ids = tuple(m.instance_id for m in members)  # type: ignore[attr-defined]
        result.append(
            Invocation(
                invoke_id=row.invoke_id,  # type: ignore[attr-defined]
                spec=convert.invocation_spec(row, ids),
                status=InvokeStatus(row.status),  # type: ignore[attr-defined]
                created_ms=row.created_ms,  # type: ignore[attr-defined]
                instances=tuple(convert.invoke_instance(m) for m in members),
            )
        )
    return result


def get_invocation(conn: Connection, account_id: str, region_id: str, invoke_id: str) -> Invocation:
    row = conn.execute(
        select(INVOCATIONS).where(
            *_scope(account_id, region_id), INVOCATIONS.c.invoke_id == invoke_id
        )
    ).first()
    if row is None:
        raise _not_found(invoke_id, region_id)
    return _invocations(conn, [row])[0]


def list_invocations(
    conn: Connection,
    account_id: str,
    region_id: str,
    invoke_id: str,
    command_id: str,
    instance_id: str,
    status: InvokeStatus | None,
    page: Page,
    command_name: str = "",
) -> tuple[list[Invocation], int]:
    # SendFile invocations are listed by DescribeSendFileResults, not here.
    conditions = [*_scope(account_id, region_id), INVOCATIONS.c.file == ""]
    if invoke_id:
        conditions.append(INVOCATIONS.c.invoke_id == invoke_id)
    if command_id:
        conditions.append(INVOCATIONS.c.command_id == command_id)
    if command_name:
        conditions.append(contains_text(INVOCATIONS.c.command_name, command_name))
    if instance_id:
        conditions.append(
            INVOCATIONS.c.invoke_id.in_(
                select(INVOCATION_INSTANCES.c.invoke_id).where(
                    INVOCATION_INSTANCES.c.instance_id == instance_id
                )
            )
        )
    if status is not None:
        conditions.append(INVOCATIONS.c.status == status.value)
    total = conn.execute(
        select(func.count()).select_from(INVOCATIONS).where(*conditions)
    ).scalar_one()
    if page.after_id is not None:
        conditions.append(INVOCATIONS.c.invoke_id < page.after_id)
    rows = conn.execute(
        select(INVOCATIONS)
        .where(*conditions)
        .order_by(INVOCATIONS.c.invoke_id.desc())
        .limit(page.size + 1)
    ).all()
    return _invocations(conn, list(rows)), total


_RECORD_COLUMNS = [
    *RECORDS.c,
    INVOCATIONS.c.region_id,
    INVOCATIONS.c.command_id,
    INVOCATIONS.c.username,
]


def _record(row: object) -> Record:
    return convert.record(
        row,
        region_id=row.region_id,  # type: ignore[attr-defined]
        command_id=row.command_id,  # type: ignore[attr-defined]
        username=row.username,  # type: ignore[attr-defined]
    )


def list_results(
    conn: Connection,
    account_id: str,
    region_id: str,
    invoke_id: str,
    instance_id: str,
    command_id: str,
    status: InvokeStatus | None,
    include_history: bool,
    page: Page,
    files: bool = False,
) -> tuple[list[tuple[Record, bytes]], int]:
    """Records (newest first) with the last 24 KiB of each one's output: those of commands,
    or with `files` those of SendFile calls."""
    conditions = [
        *_scope(account_id, region_id),
        INVOCATIONS.c.file != "" if files else INVOCATIONS.c.file == "",
    ]
    if invoke_id:
        conditions.append(RECORDS.c.invoke_id == invoke_id)
    if instance_id:
        conditions.append(RECORDS.c.instance_id == instance_id)
    if command_id:
        conditions.append(INVOCATIONS.c.command_id == command_id)
    if status is not None:
        conditions.append(RECORDS.c.state.in_([s.value for s in states_with_status(status)]))
    if not include_history:
        # Record ids grow with time: the largest per (invocation, instance) is the latest run.
        latest = RECORDS.alias("latest")
        conditions.append(
            RECORDS.c.record_id
            == select(func.max(latest.c.record_id))
            .where(
                latest.c.invoke_id == RECORDS.c.invoke_id,
                latest.c.instance_id == RECORDS.c.instance_id,
            )
            .scalar_subquery()
        )
    joined = RECORDS.join(INVOCATIONS, RECORDS.c.invoke_id == INVOCATIONS.c.invoke_id)
    total = conn.execute(select(func.count()).select_from(joined).where(*conditions)).scalar_one()
    if page.after_id is not None:
        conditions.append(RECORDS.c.record_id < page.after_id)
    rows = conn.execute(
        select(*_RECORD_COLUMNS)
        .select_from(joined)
        .where(*conditions)
        .order_by(RECORDS.c.record_id.desc())
        .limit(page.size + 1)
    ).all()
    results = []
    for row in rows:
        record = _record(row)
        start = max(0, record.output_size - RESULT_OUTPUT_TAIL)
        results.append((record, read_range(conn, record.record_id, start, record.output_size)))
    return results, total


def find_record(
    conn: Connection,
    account_id: str,
    region_id: str,
    invoke_id: str,
    instance_id: str,
    record_id: str,
) -> Record:
    """The record named by id, or the latest of (invocation, instance).

    `instance_id` may be empty when the invocation has a single instance.
    """
    invocation = get_invocation(conn, account_id, region_id, invoke_id)
    if record_id:
        conditions = [RECORDS.c.record_id == record_id, RECORDS.c.invoke_id == invoke_id]
        if instance_id:
            conditions.append(RECORDS.c.instance_id == instance_id)
        row = conn.execute(
            select(*_RECORD_COLUMNS)
            .select_from(RECORDS.join(INVOCATIONS, RECORDS.c.invoke_id == INVOCATIONS.c.invoke_id))
            .where(*conditions)
        ).first()
        if row is None:
            raise NotFound(
                reasons.RECORD_NOT_FOUND,
                f"record_id: no record {record_id!r} in invocation {invoke_id}",
                field="record_id",
            )
        return _record(row)
    members = invocation.spec.instance_ids
    if not instance_id:
        if len(members) != 1:
            raise NotFound(
                reasons.INSTANCE_NOT_IN_INVOCATION,
                f"instance_id: required, invocation {invoke_id} has {len(members)} instances",
                field="instance_id",
            )
        instance_id = members[0]
    if instance_id not in members:
        raise NotFound(
            reasons.INSTANCE_NOT_IN_INVOCATION,
            f"instance_id: {instance_id!r} is not an instance of invocation {invoke_id}",
            field="instance_id",
        )
    row = conn.execute(
        select(*_RECORD_COLUMNS)
        .select_from(RECORDS.join(INVOCATIONS, RECORDS.c.invoke_id == INVOCATIONS.c.invoke_id))
        .where(RECORDS.c.invoke_id == invoke_id, RECORDS.c.instance_id == instance_id)
        .order_by(RECORDS.c.record_id.desc())
        .limit(1)
    ).first()
    if row is None:
        raise NotFound(
            reasons.RECORD_NOT_FOUND,
            f"instance_id: invocation {invoke_id} has not run on {instance_id} yet",
            field="instance_id",
        )
    return _record(row)


def read_output(
    conn: Connection,
    account_id: str,
    region_id: str,
    invoke_id: str,
    instance_id: str,
    record_id: str,
    offset: int,
    limit: int,
) -> OutputSlice:
    record = find_record(conn, account_id, region_id, invoke_id, instance_id, record_id)
    agent_done = conn.execute(
        select(RECORDS.c.agent_done).where(RECORDS.c.record_id == record.record_id)
    ).scalar_one()
    start = min(offset, record.output_size)
    data = read_range(conn, record.record_id, start, min(record.output_size, start + limit))
    return OutputSlice(
        record_id=record.record_id,
        data=data,
        offset=start,
        total_size=record.output_size,
        dropped=record.dropped,
        terminal=record.state.terminal and bool(agent_done),
    )


@dataclass
class RecordMirror:
    """What an invocation instance copies from its latest record, and how it decides its
    status: a caller that has just written the record passes it, instead of it being read
    back (`sync_invocations`)."""

    record_id: str
    invoke_id: str
    instance_id: str
    state: str
    exit_code: int | None
    error_code: str
    error_info: str
    start_ms: int | None
    finish_ms: int | None
    stop_ms: int | None
    one_shot: bool
    latest_record_id: str | None
    stopped: bool


# The columns of a RecordMirror, to select with RECORDS joined with MIRROR_FROM.
MIRROR_COLUMNS = (
    RECORDS.c.record_id,
    RECORDS.c.invoke_id,
    RECORDS.c.instance_id,
    RECORDS.c.state,
    RECORDS.c.exit_code,
    RECORDS.c.error_code,
    RECORDS.c.error_info,
    RECORDS.c.start_ms,
    RECORDS.c.finish_ms,
    RECORDS.c.stop_ms,
    INVOCATIONS.c.one_shot,
    INVOCATION_INSTANCES.c.latest_record_id,
    INVOCATION_INSTANCES.c.stopped,
)
MIRROR_FROM = RECORDS.join(INVOCATIONS, RECORDS.c.invoke_id == INVOCATIONS.c.invoke_id).join(
    INVOCATION_INSTANCES,
    and_(
        INVOCATION_INSTANCES.c.invoke_id == RECORDS.c.invoke_id,
        INVOCATION_INSTANCES.c.instance_id == RECORDS.c.instance_id,
    ),
)


def mirror_of(row: Any) -> RecordMirror:
    return RecordMirror(
        record_id=row.record_id,
        invoke_id=row.invoke_id,
        instance_id=row.instance_id,
        state=row.state,
        exit_code=row.exit_code,
        error_code=row.error_code,
        error_info=row.error_info,
        start_ms=row.start_ms,
        finish_ms=row.finish_ms,
        stop_ms=row.stop_ms,
        one_shot=bool(row.one_shot),
        latest_record_id=row.latest_record_id,
        stopped=bool(row.stopped),
    )


_MIRROR = update(INVOCATION_INSTANCES).where(
    and_(
        INVOCATION_INSTANCES.c.invoke_id == bindparam("b_invoke_id"),
        INVOCATION_INSTANCES.c.instance_id == bindparam("b_instance_id"),
    )
)


def sync_invocations(
    conn: Connection,
    record_ids: Iterable[str],
    now_ms: int,
    effects: Effects | None = None,
    known: Mapping[str, RecordMirror] | None = None,
) -> set[str]:
    """Copies records' states to their invocation instances (when they are the instance's
    latest record) and recomputes the invocations' statuses. Returns the invocations touched.
    Records in `known` are taken as they are there (the caller has just written them).

    A one-shot instance's status is its record's; a periodic one's stays Running until it is
    stopped (the seed's rule).
    """
    ids = list(set(record_ids))
    if not ids:
        return set()
    known = known or {}
    rows = [known[i] for i in ids if i in known]
    unknown = [i for i in ids if i not in known]
    if unknown:
        rows += [
            mirror_of(r)
            for r in conn.execute(
                select(*MIRROR_COLUMNS)
                .select_from(MIRROR_FROM)
                .where(RECORDS.c.record_id.in_(unknown))
            ).all()
        ]
    mirrored = []
    for r in rows:
        if r.record_id != r.latest_record_id:
            continue  # an older run of a periodic invocation
        state = ExecutionState(r.state)
        if r.one_shot:
            status = coarse_status(state)
        else:
            status = InvokeStatus.STOPPED if r.stopped else InvokeStatus.RUNNING
        mirrored.append(
            {
                "b_invoke_id": r.invoke_id,
                "b_instance_id": r.instance_id,
                "state": state.value,
                "status": status.value,
                "exit_code": r.exit_code,
                "error_code": r.error_code,
                "error_info": r.error_info,
                "start_ms": r.start_ms,
                "finish_ms": r.finish_ms,
                "stop_ms": r.stop_ms,
                "updated_ms": now_ms,
            }
        )
    if mirrored:
        conn.execute(_MIRROR, mirrored)
    invoke_ids = {r.invoke_id for r in rows}
    if effects is not None:
        # Records that ended may free places (max_concurrency) or spend the error budget.
        invoke_ids |= advance_rate_control(conn, invoke_ids, now_ms, effects)
    refresh_statuses(conn, invoke_ids)
    return invoke_ids


def tasks_for(conn: Connection, rows: Sequence[Row[Any]]) -> list[Task]:
    """The tasks of PENDING record rows, as their agents are sent them."""
    if not rows:
        return []
    invocation_rows = {
        r.invoke_id: r
        for r in conn.execute(
            select(INVOCATIONS).where(INVOCATIONS.c.invoke_id.in_({r.invoke_id for r in rows}))
        ).all()
    }
    members = instances_of(conn, list(invocation_rows))
    tasks = []
    for row in rows:
        inv = invocation_rows[row.invoke_id]
        ids = tuple(m.instance_id for m in members[row.invoke_id])  # type: ignore[attr-defined]
        spec = convert.invocation_spec(inv, ids)
        tasks.append(
            build_task(row.record_id, row.instance_id, row.invoke_id, spec, row.output_limit)
        )
    return tasks


def advance_rate_control(
    conn: Connection, invoke_ids: set[str], now_ms: int, effects: Effects
) -> set[str]:
    """Sends held tasks of rate-controlled invocations that now have a place, or cancels them
    (`MaxErrorsExceeded`) once too many records have ended in error. Returns the invocations
    whose records changed."""
    if not invoke_ids:
        return set()
    # Locked (in one order, as refresh_statuses locks them): servers sharing PostgreSQL that
    # end records of one invocation at once must not both hand out the same free place.
    controlled = conn.execute(
        select(INVOCATIONS)
        .where(
            INVOCATIONS.c.invoke_id.in_(invoke_ids),
            (INVOCATIONS.c.max_concurrency.is_not(None) | INVOCATIONS.c.max_errors.is_not(None)),
        )
        .order_by(INVOCATIONS.c.invoke_id)
        .with_for_update()
    ).all()
    touched: set[str] = set()
    errors_states = {s.value for s in ERROR_STATES}
    active = set(ACTIVE)
    for inv in controlled:
        records = conn.execute(
            select(RECORDS.c.record_id, RECORDS.c.instance_id, RECORDS.c.state, RECORDS.c.held)
            .where(RECORDS.c.invoke_id == inv.invoke_id)
            .order_by(RECORDS.c.instance_id)
        ).all()
        waiting = [r for r in records if r.held and r.state == ExecutionState.PENDING.value]
        if not waiting:
            continue
        errors = sum(1 for r in records if r.state in errors_states)
        if error_budget_spent(inv.max_errors, errors):
            ids = [r.record_id for r in waiting]
            change = lifecycle.on(PENDING_STATE, ErrorBudgetSpent(errors, inv.max_errors))
            assert change is not None, "a held record is PENDING"
            conn.execute(
                update(RECORDS)
                .where(RECORDS.c.record_id.in_(ids), RECORDS.c.held.is_(True))
                .values(held=False, **change_values(change, now_ms))
            )
            sync_invocations(conn, ids, now_ms)
            touched.add(inv.invoke_id)
            continue
        running = sum(1 for r in records if not r.held and r.state in active)
        start = waiting[: released(inv.max_concurrency, running, len(waiting))]
        if not start:
            continue
        conn.execute(
            update(RECORDS)
            .where(RECORDS.c.record_id.in_([r.record_id for r in start]))
            .values(held=False, deadline_ms=now_ms + inv.delivery_timeout_ms)
        )
        rows = conn.execute(
            select(RECORDS)
            .where(RECORDS.c.record_id.in_([r.record_id for r in start]))
            .order_by(RECORDS.c.record_id)
        ).all()
        effects.dispatches += tasks_for(conn, rows)
        touched.add(inv.invoke_id)
    return touched


def refresh_statuses(conn: Connection, invoke_ids: set[str]) -> None:
    if not invoke_ids:
        return
    # Servers sharing PostgreSQL update different instances of one invocation at once: under
    # READ COMMITTED each would miss the other's change and keep a stale status. Locking the
    # invocation rows (in one order, so no deadlock) makes the read below see every committed
    # instance. SQLite has one writer, and ignores FOR UPDATE.
    conn.execute(
        select(INVOCATIONS.c.invoke_id)
        .where(INVOCATIONS.c.invoke_id.in_(invoke_ids))
        .order_by(INVOCATIONS.c.invoke_id)
        .with_for_update()
    ).all()
    rows = conn.execute(
        select(INVOCATION_INSTANCES.c.invoke_id, INVOCATION_INSTANCES.c.status).where(
            INVOCATION_INSTANCES.c.invoke_id.in_(invoke_ids)
        )
    ).all()
    statuses: dict[str, list[InvokeStatus]] = defaultdict(list)
    for invoke_id, status in rows:
        statuses[invoke_id].append(InvokeStatus(status))
    for invoke_id, members in statuses.items():
        conn.execute(
            update(INVOCATIONS)
            .where(INVOCATIONS.c.invoke_id == invoke_id)
            .values(status=overall_status(members).value)
        )


def stop_invocation(
    conn: Connection,
    account_id: str,
    region_id: str,
    invoke_id: str,
    instance_ids: list[str],
    now_ms: int,
    stop_deadline_ms: int,
) -> Effects:
    """Ends future runs on the named instances (periodic invocations) and stops the runs in
    flight: PENDING records become CANCELLED, RUNNING ones STOPPING; agents are told to kill."""
    invocation = get_invocation(conn, account_id, region_id, invoke_id)
    members = set(invocation.spec.instance_ids)
    for instance_id in instance_ids:
        if instance_id not in members:
            raise NotFound(
                reasons.INSTANCE_NOT_IN_INVOCATION,
                f"instance_ids: {instance_id!r} is not an instance of invocation {invoke_id}",
                field="instance_ids",
                metadata={"instance_id": instance_id},
            )
    targets = instance_ids or sorted(members)
    schedule = conn.execute(
        select(INVOCATIONS.c.one_shot, INVOCATIONS.c.next_fire_ms).where(
            INVOCATIONS.c.invoke_id == invoke_id
        )
    ).one()
    table = INVOCATION_INSTANCES
    mode = invocation.spec.repeat_mode

    def runs_to_come(latest_record_id: str | None) -> bool:
        """Every instance of a periodic or every-reboot invocation, those of an at() schedule
        that has not fired, and those of a next-reboot one that has not run yet."""
        if mode is RepeatMode.PERIOD:
            return not schedule.one_shot or schedule.next_fire_ms is not None
        if mode is RepeatMode.EVERY_REBOOT:
            return True
        return mode is RepeatMode.NEXT_REBOOT_ONLY and latest_record_id is None

    scheduled = [
        row
        for row in conn.execute(
            select(table.c.instance_id, table.c.latest_record_id).where(
                table.c.invoke_id == invoke_id,
                table.c.instance_id.in_(targets),
                table.c.stopped.is_(False),
            )
        ).all()
        if runs_to_come(row.latest_record_id)
    ]
    rows = conn.execute(
        select(RECORDS.c.record_id, RECORDS.c.instance_id, RECORDS.c.state).where(
            RECORDS.c.invoke_id == invoke_id,
            RECORDS.c.instance_id.in_(targets),
            RECORDS.c.state.in_(ACTIVE),
        )
    ).all()
    if not rows and not scheduled:
        raise FailedPrecondition(
            reasons.INVOCATION_NOT_RUNNING,
            f"invoke_id: invocation {invoke_id} is not running on "
            f"{'any of its instances' if not instance_ids else ', '.join(instance_ids)}; "
            "nothing to stop",
            field="invoke_id",
        )
    for instance_id, latest_record_id in scheduled:
        values: dict[str, object] = {
            "stopped": True,
            "status": InvokeStatus.STOPPED.value,
            "stop_ms": now_ms,
            "updated_ms": now_ms,
        }
        if latest_record_id is None:
            values["state"] = ExecutionState.CANCELLED.value
        conn.execute(
            update(table)
            .where(table.c.invoke_id == invoke_id, table.c.instance_id == instance_id)
            .values(**values)
        )
    if scheduled:
        still_scheduled = conn.execute(
            select(func.count())
            .select_from(table)
            .where(table.c.invoke_id == invoke_id, table.c.stopped.is_(False))
        ).scalar_one()
        if not still_scheduled:
            conn.execute(
                update(INVOCATIONS)
                .where(INVOCATIONS.c.invoke_id == invoke_id)
                .values(next_fire_ms=None)
            )
    effects = Effects()
    for record_id, instance_id, state in rows:
        change = lifecycle.on(ExecutionState(state), STOP_ASKED)
        assert change is not None, "a stop changes every active record"
        if change.state.value != state:
            conn.execute(
                update(RECORDS)
                .where(RECORDS.c.record_id == record_id, RECORDS.c.state == state)
                .values(**change_values(change, now_ms, stop_deadline_ms))
            )
        effects.cancels.extend(orders_of(change, instance_id, record_id))
    effects.changed_invocations |= sync_invocations(conn, [r[0] for r in rows], now_ms, effects)
    refresh_statuses(conn, {invoke_id})
    effects.changed_invocations.add(invoke_id)
    return effects


@dataclass(frozen=True)
class RecordProgress:
    """What a watcher needs of one record."""

    record: Record
    agent_done: bool
    # Output from the watcher's offset on (at most `chunk` bytes), read with the states.
    new_output: bytes = b""


@dataclass(frozen=True)
class WatchSnapshot:
    status: InvokeStatus
    records: list[RecordProgress]


def watch_snapshot(
    conn: Connection,
    account_id: str,
    region_id: str,
    invoke_id: str,
    instance_id: str,
    sent: Mapping[str, int] | None = None,
    chunk: int = 1024 * 1024,
    checked: bool = False,
) -> WatchSnapshot:
    """The invocation's status and records, with each record's output from `sent[record_id]`
    (0 when absent) on: one read for states and output alike.

    The status comes from the records' own statement: SQLite (without BEGIN) and PostgreSQL
    (READ COMMITTED) give each statement its own snapshot, and a status read apart could
    predate the records, so a watcher would see the last record end while still Running.

    `checked`: an earlier look of the same watcher found the invocation in the caller's
    scope (and the instance in it), so this look reads only the records."""
    found = None if checked else _check_watched(conn, account_id, region_id, invoke_id, instance_id)
    conditions = [RECORDS.c.invoke_id == invoke_id]
    if instance_id:
        conditions.append(RECORDS.c.instance_id == instance_id)
    rows = conn.execute(
        select(
            *_RECORD_COLUMNS,
            RECORDS.c.agent_done,
            INVOCATIONS.c.status.label("invocation_status"),
        )
        .select_from(RECORDS.join(INVOCATIONS, RECORDS.c.invoke_id == INVOCATIONS.c.invoke_id))
        .where(*conditions)
        .order_by(RECORDS.c.record_id)
    ).all()
    records = [(_record(row), bool(row.agent_done)) for row in rows]
    ranges: dict[str, tuple[int, int]] = {}
    for record, _ in records:
        offset = (sent or {}).get(record.record_id, 0)
        if offset < record.output_size:
            ranges[record.record_id] = (offset, min(record.output_size, offset + chunk))
    new_output = read_ranges(conn, ranges) if ranges else {}
    progress = [
        RecordProgress(record, agent_done, new_output.get(record.record_id, b""))
        for record, agent_done in records
    ]
    if not rows:
        # No records (yet, or any more): the invocation itself says how it stands.
        status = (
            found
            if found is not None
            else _check_watched(conn, account_id, region_id, invoke_id, instance_id)
        )
    else:
        status = InvokeStatus(rows[0].invocation_status)
    return WatchSnapshot(status=status, records=progress)


def _check_watched(
    conn: Connection, account_id: str, region_id: str, invoke_id: str, instance_id: str
) -> InvokeStatus:
    """The invocation's status, once it is found in the caller's scope with `instance_id`
    (when given) among its instances."""
    row = conn.execute(
        select(INVOCATIONS.c.status).where(
            *_scope(account_id, region_id), INVOCATIONS.c.invoke_id == invoke_id
        )
    ).first()
    if row is None:
        raise _not_found(invoke_id, region_id)
    if (
        instance_id
        and not conn.execute(
            select(INVOCATION_INSTANCES.c.instance_id).where(
                INVOCATION_INSTANCES.c.invoke_id == invoke_id,
                INVOCATION_INSTANCES.c.instance_id == instance_id,
            )
        ).first()
    ):
        raise NotFound(
            reasons.INSTANCE_NOT_IN_INVOCATION,
            f"instance_id: {instance_id!r} is not an instance of invocation {invoke_id}",
            field="instance_id",
        )
    return InvokeStatus(row.status)


def modify_periodic(
    conn: Connection,
    account_id: str,
    region_id: str,
    invoke_id: str,
    spec: InvocationSpec,
    added_instance_ids: Sequence[str],
    schedule: tuple[int | None, bool] | None,
    now_ms: int,
) -> Effects:
    """Stores a changed periodic invocation (ModifyInvocationAttribute): its content,
    parameters and frequency for the next fires, `schedule` = (next fire, one-shot) when the
    frequency changed, and new instances that take part from the next fire."""
    row = conn.execute(
        select(INVOCATIONS.c.next_fire_ms)
        .where(*_scope(account_id, region_id), INVOCATIONS.c.invoke_id == invoke_id)
        .with_for_update()
    ).first()
    if row is None:
        raise _not_found(invoke_id, region_id)
    if row.next_fire_ms is None:
        raise FailedPrecondition(
            reasons.INVOCATION_NOT_RUNNING,
            f"invoke_id: invocation {invoke_id} has no fire to come (it is stopped or over)",
            field="invoke_id",
        )
    values: dict[str, object] = {
        "content": spec.content,
        "parameters": json.dumps(spec.parameters, sort_keys=True),
        "frequency": spec.frequency,
    }
    if schedule is not None:
        values["next_fire_ms"], values["one_shot"] = schedule
    conn.execute(update(INVOCATIONS).where(INVOCATIONS.c.invoke_id == invoke_id).values(**values))
    if added_instance_ids:
        conn.execute(
            insert(INVOCATION_INSTANCES),
            [
                {
                    "invoke_id": invoke_id,
                    "instance_id": instance_id,
                    "state": ExecutionState.PENDING.value,
                    "status": InvokeStatus.RUNNING.value,
                    "repeats": 0,
                    "stopped": False,
                    "latest_record_id": None,
                    "created_ms": now_ms,
                    "updated_ms": now_ms,
                }
                for instance_id in added_instance_ids
            ],
        )
        conn.execute(
            update(INSTANCES)
            .where(INSTANCES.c.instance_id.in_(list(added_instance_ids)))
            .values(invocation_count=INSTANCES.c.invocation_count + 1)
        )
    refresh_statuses(conn, {invoke_id})
    effects = Effects()
    effects.changed_invocations.add(invoke_id)
    return effects


def list_file_results(
    conn: Connection, account_id: str, region_id: str, invoke_id: str, instance_id: str, page: Page
) -> tuple[list[tuple[Record, FileSpec]], int]:
    """The records of SendFile invocations (newest first), each with its file."""
    results, total = list_results(
        conn, account_id, region_id, invoke_id, instance_id, "", None, False, page, files=True
    )
    files = {
        row.invoke_id: FileSpec(**json.loads(row.file))
        for row in conn.execute(
            select(INVOCATIONS.c.invoke_id, INVOCATIONS.c.file).where(
                INVOCATIONS.c.invoke_id.in_({r.invoke_id for r, _ in results})
            )
        ).all()
    }
    return [(record, files[record.invoke_id]) for record, _ in results], total
