"""Repository functions for the changes clients make to an invocation once it exists: stopping
it (StopInvocation) and modifying a periodic one (ModifyInvocationAttribute)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection, func, insert, select, update

from cloudassist.server.domain import lifecycle, reasons
from cloudassist.server.domain.errors import FailedPrecondition, NotFound
from cloudassist.server.domain.lifecycle import STOP_ASKED
from cloudassist.server.domain.model import InvocationSpec, RepeatMode
from cloudassist.server.domain.reports import Effects
from cloudassist.server.domain.status import ExecutionState, InvokeStatus
from cloudassist.server.store.invocations import (
    ACTIVE,
    get_invocation,
    invocation_not_found,
    invocation_scope,
)
from cloudassist.server.store.rollup import refresh_statuses, sync_invocations
from cloudassist.server.store.tables import INSTANCES, INVOCATION_INSTANCES, INVOCATIONS, RECORDS
from cloudassist.server.store.transitions import change_values, orders_of


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
        .where(*invocation_scope(account_id, region_id), INVOCATIONS.c.invoke_id == invoke_id)
        .with_for_update()
    ).first()
    if row is None:
        raise invocation_not_found(invoke_id, region_id)
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
