"""Repository functions for scheduled fires of periodic invocations."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, update

from cloudassist.server.domain.reports import Effects
from cloudassist.server.domain.schedule import AT_EXPIRED, Schedule
from cloudassist.server.domain.status import ACTIVE_STATES, ExecutionState, InvokeStatus
from cloudassist.server.domain.tasks import build_task
from cloudassist.server.store import convert
from cloudassist.server.store.invocations import FirePlan, insert_records
from cloudassist.server.store.rollup import refresh_statuses, sync_invocations
from cloudassist.server.store.tables import INSTANCES, INVOCATION_INSTANCES, INVOCATIONS, RECORDS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FirePolicy:
    # A fire found later than this (the server was down) is skipped, not run late.
    late_grace_ms: int
    delivery_timeout_ms: int
    output_limit: int
    # (frequency, timeout_seconds, created_ms) -> the invocation's schedule
    schedule_for: Callable[[str, int, int], Schedule]
    new_record_id: Callable[[], str]


def next_fire_ms(conn: Connection) -> int | None:
    """The earliest next fire time of any invocation (None: nothing is scheduled)."""
    value = conn.execute(select(func.min(INVOCATIONS.c.next_fire_ms))).scalar_one()
    return int(value) if value is not None else None


def fire_due(conn: Connection, now_ms: int, policy: FirePolicy, limit: int = 100) -> Effects:
    """Runs every scheduled fire that is due: one PENDING record per instance that is neither
    stopped nor still running its previous run. Each fire is claimed by moving next_fire_ms
    on, so it happens once."""
    effects = Effects()
    due_rows = conn.execute(
        select(INVOCATIONS)
        .where(INVOCATIONS.c.next_fire_ms <= now_ms)
        .order_by(INVOCATIONS.c.next_fire_ms)
        .limit(limit)
        # Each fire is claimed once even with several servers scheduling (PostgreSQL).
        .with_for_update(skip_locked=True)
    ).all()
    for inv in due_rows:
        due = inv.next_fire_ms
        try:
            schedule = policy.schedule_for(inv.frequency, inv.timeout_seconds, inv.created_ms)
        except Exception:
            log.exception("invocation %s has an unusable schedule; it is not fired", inv.invoke_id)
            schedule = None
        on_time = now_ms - due <= policy.late_grace_ms
        following = None
        if schedule is not None:
            following = schedule.next_after(due if on_time else now_ms)
            if following is not None and following <= now_ms:
                following = schedule.next_after(now_ms)
        claimed = conn.execute(
            update(INVOCATIONS)
            .where(INVOCATIONS.c.invoke_id == inv.invoke_id, INVOCATIONS.c.next_fire_ms == due)
            .values(next_fire_ms=following)
        )
        if claimed.rowcount != 1:
            continue
        if not on_time or schedule is None:
            log.info("invocation %s: skipped the fire due at %d (missed)", inv.invoke_id, due)
            if schedule is None or schedule.one_shot:
                # It will never run: end it rather than leave it Running forever.
                _never_runs(conn, inv.invoke_id, now_ms)
                effects.changed_invocations.add(inv.invoke_id)
            continue
        effects.merge(_fire(conn, inv, now_ms, policy))
    return effects


def _never_runs(conn: Connection, invoke_id: str, now_ms: int) -> None:
    members = INVOCATION_INSTANCES
    conn.execute(
        update(members)
        .where(members.c.invoke_id == invoke_id, members.c.stopped.is_(False))
        .values(
            state=ExecutionState.ABORTED.value,
            status=InvokeStatus.FAILED.value,
            error_code=AT_EXPIRED,
            error_info="the server was not running at the scheduled time",
            finish_ms=now_ms,
            updated_ms=now_ms,
        )
    )
    refresh_statuses(conn, {invoke_id})


def _fire(conn: Connection, inv: object, now_ms: int, policy: FirePolicy) -> Effects:
    members = INVOCATION_INSTANCES
    invoke_id: str = inv.invoke_id  # type: ignore[attr-defined]
    rows = conn.execute(
        select(members.c.instance_id, members.c.repeats, members.c.stopped, RECORDS.c.state)
        .select_from(members.outerjoin(RECORDS, RECORDS.c.record_id == members.c.latest_record_id))
        .where(members.c.invoke_id == invoke_id)
        .order_by(members.c.instance_id)
    ).all()
    all_ids = tuple(r.instance_id for r in rows)
    active = {s.value for s in ACTIVE_STATES}
    ready = [r for r in rows if not r.stopped and r.state not in active]
    for busy in (r for r in rows if not r.stopped and r.state in active):
        log.info("invocation %s: %s still runs the previous fire; skipped", invoke_id,
                 busy.instance_id)  # fmt: skip
    effects = Effects()
    if not ready:
        return effects
    record_ids = {r.instance_id: policy.new_record_id() for r in ready}
    repeats = {r.instance_id: r.repeats + 1 for r in ready}
    plan = FirePlan(
        now_ms=now_ms,
        delivery_deadline_ms=now_ms + policy.delivery_timeout_ms,
        output_limit=policy.output_limit,
    )
    insert_records(conn, invoke_id, record_ids, repeats, plan)
    for instance_id, record_id in record_ids.items():
        conn.execute(
            update(members)
            .where(members.c.invoke_id == invoke_id, members.c.instance_id == instance_id)
            .values(latest_record_id=record_id, repeats=repeats[instance_id])
        )
    conn.execute(
        update(INSTANCES)
        .where(INSTANCES.c.instance_id.in_(list(record_ids)))
        .values(last_invoked_ms=now_ms)
    )
    spec = convert.invocation_spec(inv, all_ids)
    effects.dispatches += [
        build_task(record_id, instance_id, invoke_id, spec, policy.output_limit)
        for instance_id, record_id in record_ids.items()
    ]
    effects.changed_invocations |= sync_invocations(conn, record_ids.values(), now_ms)
    return effects
