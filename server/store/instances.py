"""Repository functions for instances: finding and listing them, deregistering one, and their
presence (online through which server)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, delete, func, select, update
from sqlalchemy.sql.elements import ColumnElement

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import NotFound
from cloudassist.server.domain.model import Instance
from cloudassist.server.domain.pagination import Page, split_time_cursor
from cloudassist.server.domain.reports import Effects
from cloudassist.server.domain.status import ExecutionState, InvokeStatus
from cloudassist.server.domain.tags import TagPairs
from cloudassist.server.store import convert
from cloudassist.server.store.invocations import ACTIVE
from cloudassist.server.store.rollup import refresh_statuses, sync_invocations
from cloudassist.server.store.tables import (
    INSTANCE_TAGS,
    INSTANCES,
    INVOCATION_INSTANCES,
    INVOCATIONS,
    RECORDS,
)
from cloudassist.server.store.tags import having_tags, tags_of


def _scope(account_id: str, region_id: str) -> list[ColumnElement[bool]]:
    return [INSTANCES.c.account_id == account_id, INSTANCES.c.region_id == region_id]


_FIND = select(INSTANCES).where(
    INSTANCES.c.account_id == bindparam("p_account_id"),
    INSTANCES.c.region_id == bindparam("p_region_id"),
    INSTANCES.c.instance_id.in_(bindparam("p_instance_ids", expanding=True)),
)


def find_instances(
    conn: Connection, account_id: str, region_id: str, instance_ids: Sequence[str]
) -> dict[str, Instance]:
    rows = conn.execute(
        _FIND,
        {
            "p_account_id": account_id,
            "p_region_id": region_id,
            "p_instance_ids": list(instance_ids),
        },
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


_OFFLINE = (
    update(INSTANCES)
    .where(
        INSTANCES.c.instance_id == bindparam("p_instance_id"),
        INSTANCES.c.server_id == bindparam("p_server_id"),
    )
    .values(online=False, last_heartbeat_ms=bindparam("p_now"))
)


def mark_offline(conn: Connection, instance_id: str, server_id: str, now_ms: int) -> None:
    """The agent left this server (unless it has connected to another one since)."""
    conn.execute(
        _OFFLINE, {"p_instance_id": instance_id, "p_server_id": server_id, "p_now": now_ms}
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
