"""Repository functions for an agent's hello: authenticating the instance, reconciling the
tasks its agent holds with the stored records, the runs its boot sets off, and the tasks that
wait for it."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection, select, update

from cloudassist.server.domain import lifecycle, reasons
from cloudassist.server.domain.agents import AgentIdentity, HeldTask
from cloudassist.server.domain.credentials import secret_matches
from cloudassist.server.domain.errors import Unauthenticated
from cloudassist.server.domain.ids import new_id
from cloudassist.server.domain.lifecycle import HelloHolding, HelloWithout
from cloudassist.server.domain.model import RepeatMode
from cloudassist.server.domain.reports import CancelOrder, Effects
from cloudassist.server.domain.status import ExecutionState
from cloudassist.server.domain.tasks import Task
from cloudassist.server.store.invocations import FirePlan, insert_records, tasks_for
from cloudassist.server.store.rollup import sync_invocations
from cloudassist.server.store.tables import INSTANCES, INVOCATION_INSTANCES, INVOCATIONS, RECORDS
from cloudassist.server.store.tags import replace_agent_tags
from cloudassist.server.store.transitions import change_values, orders_of

PENDING = ExecutionState.PENDING.value
RUNNING = ExecutionState.RUNNING.value
STOPPING = ExecutionState.STOPPING.value


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
