"""Repository functions that create invocations and read them back: an invocation with its
instances, and the tasks its records are sent as."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Row, Select, bindparam, delete, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from cloudassist.server.domain import reasons
from cloudassist.server.domain.accounts import AuditEntry, naming_also
from cloudassist.server.domain.errors import NotFound, ResourceExhausted
from cloudassist.server.domain.model import CommandSpec, Invocation, InvocationSpec
from cloudassist.server.domain.rate_control import released
from cloudassist.server.domain.reports import Effects
from cloudassist.server.domain.status import ACTIVE_STATES, ExecutionState, InvokeStatus
from cloudassist.server.domain.tasks import Task, build_task
from cloudassist.server.store import convert
from cloudassist.server.store.commands import check_command_quota, count_invocation, store_command
from cloudassist.server.store.idempotency import IdempotencyKey, remember, replay
from cloudassist.server.store.locks import lock_scope
from cloudassist.server.store.security import record_audit
from cloudassist.server.store.statements import in_list, in_values
from cloudassist.server.store.tables import (
    INSTANCES,
    INVOCATION_DAYS,
    INVOCATION_INSTANCES,
    INVOCATIONS,
    RECORDS,
)

# The states of the records still in flight, as stored.
ACTIVE = [s.value for s in ACTIVE_STATES]

# The statements of every invocation's transaction, built once: building one (its values
# coerced, its cache key computed) costs more than SQLite takes to run it.
_INVOCATIONS_TODAY = (
    select(func.count())
    .select_from(INVOCATIONS)
    .where(
        INVOCATIONS.c.account_id == bindparam("p_account_id"),
        INVOCATIONS.c.region_id == bindparam("p_region_id"),
        INVOCATIONS.c.created_ms >= bindparam("p_day_start_ms"),
    )
)
_DAY_KEY = (
    INVOCATION_DAYS.c.account_id == bindparam("p_account_id"),
    INVOCATION_DAYS.c.region_id == bindparam("p_region_id"),
    INVOCATION_DAYS.c.day_start_ms == bindparam("p_day_start_ms"),
)
_DAY_COUNT = select(INVOCATION_DAYS.c.invocations).where(*_DAY_KEY)
_ONE_MORE_TODAY = (
    update(INVOCATION_DAYS).where(*_DAY_KEY).values(invocations=INVOCATION_DAYS.c.invocations + 1)
)
_NEW_DAY = insert(INVOCATION_DAYS)
_OLD_DAYS = delete(INVOCATION_DAYS).where(
    INVOCATION_DAYS.c.account_id == bindparam("p_account_id"),
    INVOCATION_DAYS.c.region_id == bindparam("p_region_id"),
    INVOCATION_DAYS.c.day_start_ms < bindparam("p_before_ms"),
)
# Days kept before the current one (any server's clock, a little behind, may still be in one).
_DAYS_KEPT_MS = 7 * 86_400_000
_INSERT_INVOCATION = insert(INVOCATIONS)
_BOOT_IDS = select(INSTANCES.c.instance_id, INSTANCES.c.boot_id).where(
    INSTANCES.c.instance_id.in_(bindparam("p_instance_ids", expanding=True))
)
_INSERT_INVOCATION_INSTANCES = insert(INVOCATION_INSTANCES)
_INSERT_RECORDS = insert(RECORDS)
_COUNT_ON_INSTANCES = (
    update(INSTANCES)
    .where(INSTANCES.c.instance_id.in_(bindparam("p_instance_ids", expanding=True)))
    .values(
        invocation_count=INSTANCES.c.invocation_count + 1,
        last_invoked_ms=bindparam("p_now_ms"),
    )
)


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


def invocation_not_found(invoke_id: str, region_id: str) -> NotFound:
    return NotFound(
        reasons.INVOCATION_NOT_FOUND,
        f"invoke_id: no invocation {invoke_id!r} in region {region_id}",
        field="invoke_id",
    )


def invocation_scope(account_id: str, region_id: str) -> list[ColumnElement[bool]]:
    return [INVOCATIONS.c.account_id == account_id, INVOCATIONS.c.region_id == region_id]


def claim_invocation_quota(
    conn: Connection, account_id: str, region_id: str, day_start_ms: int, quota: int
) -> None:
    """Counts one more invocation today for the account and region, or raises
    ResourceExhausted when the day's quota is used up. The caller holds `lock_scope` on the
    account and region and inserts the invocation in the same transaction.

    The day's count is one row (`invocation_days`); the day's first invocation makes it from a
    count of the invocations made since the day began (so a server upgraded during the day,
    or whose time zone changed, starts from the truth).
    """
    key = {"p_account_id": account_id, "p_region_id": region_id, "p_day_start_ms": day_start_ms}
    count = conn.execute(_DAY_COUNT, key).scalar()
    if count is None:
        count = conn.execute(_INVOCATIONS_TODAY, key).scalar_one()
        conn.execute(_OLD_DAYS, {**key, "p_before_ms": day_start_ms - _DAYS_KEPT_MS})
        conn.execute(
            _NEW_DAY,
            {
                "account_id": account_id,
                "region_id": region_id,
                "day_start_ms": day_start_ms,
                "invocations": count,
            },
        )
    if count >= quota:
        raise ResourceExhausted(
            reasons.INVOCATION_EXCEED_QUOTA,
            f"region {region_id} has made {count} invocations today, the daily quota is {quota}",
            field="region_id",
            metadata={"quota": str(quota), "region_id": region_id},
        )
    conn.execute(_ONE_MORE_TODAY, key)


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
    claim_invocation_quota(conn, account_id, spec.region_id, plan.day_start_ms, plan.daily_quota)
    if plan.new_command is not None:
        store_command(conn, account_id, spec.command_id, plan.new_command, plan.now_ms)
    status = InvokeStatus.RUNNING.value
    conn.execute(
        _INSERT_INVOCATION,
        {
            "invoke_id": plan.invoke_id,
            "account_id": account_id,
            "region_id": spec.region_id,
            "command_id": spec.command_id,
            "command_name": spec.command_name,
            "command_type": spec.command_type.value,
            "content": spec.content,
            "enable_parameter": spec.enable_parameter,
            "parameters": json.dumps(spec.parameters, sort_keys=True),
            "repeat_mode": spec.repeat_mode.value,
            "frequency": spec.frequency,
            "timeout_seconds": spec.timeout_seconds,
            "working_dir": spec.working_dir,
            "username": spec.username,
            "env": json.dumps(spec.env, sort_keys=True),
            "launcher": spec.launcher,
            "max_concurrency": spec.max_concurrency,
            "max_errors": spec.max_errors,
            "delivery_timeout_ms": plan.delivery_deadline_ms - plan.now_ms,
            "output_limit": plan.output_limit,
            "file": json.dumps(asdict(spec.file)) if spec.file is not None else "",
            "status": status,
            "one_shot": plan.one_shot,
            "next_fire_ms": plan.next_fire_ms,
            "created_ms": plan.now_ms,
        },
    )
    pending = ExecutionState.PENDING.value
    boot_ids: dict[str, str] = {
        row.instance_id: row.boot_id
        for row in conn.execute(_BOOT_IDS, {"p_instance_ids": list(spec.instance_ids)})
    }
    conn.execute(
        _INSERT_INVOCATION_INSTANCES,
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
        _COUNT_ON_INSTANCES,
        {"p_instance_ids": list(spec.instance_ids), "p_now_ms": plan.now_ms},
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
        _INSERT_RECORDS,
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


@lru_cache(maxsize=64)
def _instances_of(count: int) -> Select[Any]:
    """The instances of `count` invocations."""
    return (
        select(INVOCATION_INSTANCES)
        .where(in_list(INVOCATION_INSTANCES.c.invoke_id, "p_invoke_id", count))
        .order_by(INVOCATION_INSTANCES.c.instance_id)
    )


def instances_of(conn: Connection, invoke_ids: list[str]) -> dict[str, list[object]]:
    grouped: dict[str, list[object]] = defaultdict(list)
    if not invoke_ids:
        return grouped
    rows = conn.execute(_instances_of(len(invoke_ids)), in_values("p_invoke_id", invoke_ids)).all()
    for row in rows:
        grouped[row.invoke_id].append(row)
    return grouped


def invocations_of(conn: Connection, rows: list[object]) -> list[Invocation]:
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
            *invocation_scope(account_id, region_id), INVOCATIONS.c.invoke_id == invoke_id
        )
    ).first()
    if row is None:
        raise invocation_not_found(invoke_id, region_id)
    return invocations_of(conn, [row])[0]


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
