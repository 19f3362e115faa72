"""Repository functions for agents' hellos and goodbyes: authenticating the instance,
reconciling the tasks its agent holds with the stored records, the runs its boot sets off, the
tasks that wait for it, and its going offline. They are stored in batches (one transaction for
those that wait together) because a restarted server meets its whole fleet at once; the
statements are built once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, select, update

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
from cloudassist.server.store.instances import mark_offline
from cloudassist.server.store.invocations import FirePlan, insert_records, tasks_for
from cloudassist.server.store.rollup import sync_invocations
from cloudassist.server.store.statements import MAX_FIXED_IN, in_list, in_values
from cloudassist.server.store.tables import INSTANCES, INVOCATION_INSTANCES, INVOCATIONS, RECORDS
from cloudassist.server.store.tags import replace_agent_tags
from cloudassist.server.store.transitions import change_values, orders_of

PENDING = ExecutionState.PENDING.value
RUNNING = ExecutionState.RUNNING.value
STOPPING = ExecutionState.STOPPING.value

# (task id, stored offset, result stored): what the welcome acknowledges of each held task.
Acks = list[tuple[str, int, bool]]
HelloStored = tuple[Effects, Acks]


@dataclass(frozen=True)
class Hello:
    """One agent's hello: what it says of itself and the tasks it holds."""

    agent: AgentIdentity
    held: tuple[HeldTask, ...] = ()


@dataclass(frozen=True)
class Goodbye:
    """An agent's stream with this server ended."""

    instance_id: str


PresenceChange = Hello | Goodbye


@lru_cache(maxsize=MAX_FIXED_IN)
def _secrets(count: int) -> Select[Any]:
    """The stored secrets of `count` instances (`p_id_<n>`)."""
    return select(INSTANCES.c.instance_id, INSTANCES.c.secret_hash).where(
        in_list(INSTANCES.c.instance_id, "p_id", count)
    )


_ONLINE = (
    update(INSTANCES)
    .where(INSTANCES.c.instance_id == bindparam("p_instance_id"))
    .values(
        os_type=bindparam("p_os_type"),
        hostname=bindparam("p_hostname"),
        agent_version=bindparam("p_agent_version"),
        online=True,
        server_id=bindparam("p_server_id"),
        last_heartbeat_ms=bindparam("p_now"),
        boot_id=bindparam("p_boot_id"),
        extra_command_types=bindparam("p_extra"),
    )
)
_PENDING = (
    select(RECORDS)
    .where(
        RECORDS.c.instance_id == bindparam("p_instance_id"),
        RECORDS.c.state == PENDING,
        RECORDS.c.held.is_(False),  # waiting for a place under max_concurrency
    )
    .order_by(RECORDS.c.record_id)
)
# The instance's records the server thinks are on their way or running, oldest first.
_OPEN = (
    select(RECORDS)
    .where(
        RECORDS.c.instance_id == bindparam("p_instance_id"),
        RECORDS.c.state.in_([PENDING, RUNNING, STOPPING]),
    )
    .order_by(RECORDS.c.record_id)
)


@lru_cache(maxsize=MAX_FIXED_IN)
def _held(count: int) -> Select[Any]:
    """The records among `count` (`p_record_id_<n>`) that are the instance's."""
    return select(RECORDS).where(
        in_list(RECORDS.c.record_id, "p_record_id", count),
        RECORDS.c.instance_id == bindparam("p_instance_id"),
    )


_TIMEOUT = select(INVOCATIONS.c.timeout_seconds).where(
    INVOCATIONS.c.invoke_id == bindparam("p_invoke_id")
)
_REBOOT_MEMBERS = (
    select(
        INVOCATION_INSTANCES.c.invoke_id,
        INVOCATION_INSTANCES.c.boot_id,
        INVOCATION_INSTANCES.c.repeats,
        INVOCATION_INSTANCES.c.latest_record_id,
        INVOCATIONS.c.repeat_mode,
        INVOCATIONS.c.delivery_timeout_ms,
        INVOCATIONS.c.output_limit,
    )
    .select_from(
        INVOCATION_INSTANCES.join(
            INVOCATIONS, INVOCATIONS.c.invoke_id == INVOCATION_INSTANCES.c.invoke_id
        )
    )
    .where(
        INVOCATION_INSTANCES.c.instance_id == bindparam("p_instance_id"),
        INVOCATION_INSTANCES.c.stopped.is_(False),
        INVOCATION_INSTANCES.c.boot_id != bindparam("p_boot_id"),
        INVOCATIONS.c.repeat_mode.in_(
            [RepeatMode.NEXT_REBOOT_ONLY.value, RepeatMode.EVERY_REBOOT.value]
        ),
    )
)


def pending_tasks(conn: Connection, instance_id: str) -> list[Task]:
    """Every task of the instance that waits for delivery (PENDING), oldest first."""
    return tasks_for(conn, conn.execute(_PENDING, {"p_instance_id": instance_id}).all())


def presence_changes(
    conn: Connection, changes: Sequence[PresenceChange], now_ms: int, server_id: str = ""
) -> list[HelloStored | Unauthenticated | None]:
    """Stores agents' hellos and goodbyes in one transaction, each as alone and in order (a
    later change of an instance sees what an earlier one wrote). A hello's outcome is what
    `agent_hello` returns, or the Unauthenticated it raises (nothing of that hello is
    written); a goodbye's is None."""
    ids = [c.agent.instance_id for c in changes if isinstance(c, Hello)]
    stored = {}
    if ids:
        found = conn.execute(_secrets(len(ids)), in_values("p_id", ids))
        stored = {r.instance_id: r.secret_hash for r in found}
    outcomes: list[HelloStored | Unauthenticated | None] = []
    for change in changes:
        if isinstance(change, Goodbye):
            mark_offline(conn, change.instance_id, server_id, now_ms)
            outcomes.append(None)
            continue
        agent = change.agent
        if not secret_matches(agent.secret, stored.get(agent.instance_id)):
            outcomes.append(
                Unauthenticated(
                    reasons.INVALID_INSTANCE_CREDENTIALS,
                    f"hello: instance {agent.instance_id!r} is not registered, or its secret "
                    "is wrong; register the agent with an activation",
                    field="hello.instance_secret",
                )
            )
            continue
        outcomes.append(_store_hello(conn, change, now_ms, server_id))
    return outcomes


def agent_hello(
    conn: Connection,
    agent: AgentIdentity,
    held: Sequence[HeldTask],
    now_ms: int,
    server_id: str = "",
) -> HelloStored:
    """Authenticates the instance, marks it online and reconciles the tasks the agent holds.

    Returns the effects (re-dispatch of PENDING records, cancels, state changes) and the
    acknowledgements for the welcome message: (task id, stored offset, result stored).
    Raises Unauthenticated for an unknown instance or a wrong secret.
    """
    (outcome,) = presence_changes(conn, [Hello(agent, tuple(held))], now_ms, server_id)
    if isinstance(outcome, Unauthenticated):
        raise outcome
    assert outcome is not None
    return outcome


def _store_hello(conn: Connection, hello: Hello, now_ms: int, server_id: str) -> HelloStored:
    agent, held = hello.agent, hello.held
    instance_id = agent.instance_id
    conn.execute(
        _ONLINE,
        {
            "p_instance_id": instance_id,
            "p_os_type": agent.os_type.value,
            "p_hostname": agent.hostname,
            "p_agent_version": agent.agent_version,
            "p_server_id": server_id,
            "p_now": now_ms,
            "p_boot_id": agent.boot_id,
            "p_extra": json.dumps(sorted(t.value for t in agent.extra_command_types)),
        },
    )
    replace_agent_tags(conn, instance_id, agent.tags)
    booted = fire_on_boot(conn, instance_id, agent.boot_id, now_ms)
    effects = Effects()
    held_ids = {t.record_id for t in held}
    known: dict[str, Row[Any]] = {}
    if held_ids:
        rows = conn.execute(
            _held(len(held_ids)),
            {**in_values("p_record_id", sorted(held_ids)), "p_instance_id": instance_id},
        ).all()
        known = {r.record_id: r for r in rows}
    acks: Acks = []
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
            timeout = conn.execute(_TIMEOUT, {"p_invoke_id": row.invoke_id}).scalar_one()
            _change(
                conn, row.record_id, state, change_values(change, now_ms, now_ms + timeout * 1000)
            )
            changed.append(row.record_id)
        effects.cancels.extend(orders_of(change, instance_id, row.record_id))
    # Read after the held ones changed (they are left out) and after the boot runs were made.
    open_rows = [
        r
        for r in conn.execute(_OPEN, {"p_instance_id": instance_id}).all()
        if r.record_id not in held_ids
    ]
    for row in open_rows:
        if row.state == PENDING:
            continue
        # The agent does not know a task the server thinks is running: it restarted.
        change = lifecycle.on(ExecutionState(row.state), HelloWithout())
        assert change is not None, "a running or stopping record the agent lost ends"
        _change(conn, row.record_id, ExecutionState(row.state), change_values(change, now_ms))
        changed.append(row.record_id)
    pending = [r for r in open_rows if r.state == PENDING and not r.held]
    effects.dispatches.extend(tasks_for(conn, pending))
    effects.changed_invocations |= sync_invocations(conn, [*changed, *booted], now_ms, effects)
    return effects, acks


def _change(
    conn: Connection, record_id: str, state: ExecutionState, values: dict[str, object]
) -> None:
    """Writes a record's change, only from the state it was read in."""
    conn.execute(
        update(RECORDS)
        .where(RECORDS.c.record_id == record_id, RECORDS.c.state == state.value)
        .values(**values)
    )


def fire_on_boot(conn: Connection, instance_id: str, boot_id: str, now_ms: int) -> list[str]:
    """Records for the reboot-mode invocations of an instance whose agent reports a boot id
    other than the one they last saw (the instance has booted since). A member that has seen
    none yet (its agent never said) takes this one without running. Returns the new records'
    ids (PENDING: the hello sends them)."""
    if not boot_id:
        return []
    members = INVOCATION_INSTANCES
    rows = conn.execute(_REBOOT_MEMBERS, {"p_instance_id": instance_id, "p_boot_id": boot_id}).all()
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
