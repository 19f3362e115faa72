"""Repository functions that roll records up into their invocations: the latest record's state
copied to its invocation instance, the invocation's overall status, and the rate control
(max_concurrency, max_errors) that records ending set off."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BindParameter, Connection, and_, bindparam, select, update

from cloudassist.server.domain import lifecycle
from cloudassist.server.domain.lifecycle import ErrorBudgetSpent
from cloudassist.server.domain.rate_control import ERROR_STATES, error_budget_spent, released
from cloudassist.server.domain.reports import Effects
from cloudassist.server.domain.status import (
    ExecutionState,
    InvokeStatus,
    coarse_status,
    overall_status,
)
from cloudassist.server.store.invocations import ACTIVE, tasks_for
from cloudassist.server.store.tables import INVOCATION_INSTANCES, INVOCATIONS, RECORDS
from cloudassist.server.store.transitions import change_values

PENDING_STATE = ExecutionState.PENDING


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


# Built once (a statement's construction costs more than SQLite takes to run it); every
# record that ends goes through these.
_INVOKE_IDS: BindParameter[str] = bindparam("p_invoke_ids", expanding=True)
_RATE_CONTROLLED = (
    select(INVOCATIONS)
    .where(
        INVOCATIONS.c.invoke_id.in_(_INVOKE_IDS),
        (INVOCATIONS.c.max_concurrency.is_not(None) | INVOCATIONS.c.max_errors.is_not(None)),
    )
    .order_by(INVOCATIONS.c.invoke_id)
    .with_for_update()
)
_LOCK_INVOCATIONS = (
    select(INVOCATIONS.c.invoke_id)
    .where(INVOCATIONS.c.invoke_id.in_(_INVOKE_IDS))
    .order_by(INVOCATIONS.c.invoke_id)
    .with_for_update()
)
_MEMBER_STATUSES = select(INVOCATION_INSTANCES.c.invoke_id, INVOCATION_INSTANCES.c.status).where(
    INVOCATION_INSTANCES.c.invoke_id.in_(_INVOKE_IDS)
)
_SET_STATUS = update(INVOCATIONS).where(INVOCATIONS.c.invoke_id == bindparam("p_invoke_id"))


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
    controlled = conn.execute(_RATE_CONTROLLED, {"p_invoke_ids": sorted(invoke_ids)}).all()
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
    ids = {"p_invoke_ids": sorted(invoke_ids)}
    conn.execute(_LOCK_INVOCATIONS, ids).all()
    statuses: dict[str, list[InvokeStatus]] = defaultdict(list)
    for invoke_id, status in conn.execute(_MEMBER_STATUSES, ids).all():
        statuses[invoke_id].append(InvokeStatus(status))
    for invoke_id, members in statuses.items():
        conn.execute(
            _SET_STATUS, {"p_invoke_id": invoke_id, "status": overall_status(members).value}
        )
