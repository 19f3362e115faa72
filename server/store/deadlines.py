"""Repository functions for records' deadlines (delivery, execution, stop confirmation): the
earliest one to come, and those that have passed."""

from __future__ import annotations

from sqlalchemy import Connection, func, select, update

from cloudassist.server.domain import lifecycle
from cloudassist.server.domain.lifecycle import DeadlinePassed
from cloudassist.server.domain.reports import Effects, RecordEnded
from cloudassist.server.domain.status import ExecutionState
from cloudassist.server.store.rollup import sync_invocations
from cloudassist.server.store.tables import INSTANCES, INVOCATIONS, RECORDS
from cloudassist.server.store.transitions import change_values, orders_of


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
