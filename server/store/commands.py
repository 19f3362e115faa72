"""Repository functions for commands. Each takes a Connection inside a transaction."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Select, String, bindparam, delete, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import NotFound, ResourceExhausted
from cloudassist.server.domain.model import Command, CommandSpec, CommandType
from cloudassist.server.domain.pagination import Page
from cloudassist.server.domain.tags import TagPairs
from cloudassist.server.store import convert
from cloudassist.server.store.idempotency import IdempotencyKey, remember, replay
from cloudassist.server.store.locks import lock_scope
from cloudassist.server.store.search import contains_param, contains_value
from cloudassist.server.store.statements import (
    Count,
    Rows,
    counted_page,
    in_list,
    in_values,
    page_total,
)
from cloudassist.server.store.tables import COMMAND_TAGS, COMMANDS
from cloudassist.server.store.tags import TagTerm, tagged_with


def command_values(
    account_id: str, command_id: str, spec: CommandSpec, now_ms: int
) -> dict[str, object]:
    return {
        "command_id": command_id,
        "account_id": account_id,
        "region_id": spec.region_id,
        "name": spec.name,
        "type": spec.type.value,
        "content": spec.content,
        "description": spec.description,
        "working_dir": spec.working_dir,
        "timeout_seconds": spec.timeout_seconds,
        "enable_parameter": spec.enable_parameter,
        "parameter_names": json.dumps(list(spec.parameter_names)),
        "launcher": spec.launcher,
        "invoke_times": 0,
        "created_ms": now_ms,
    }


def store_command(
    conn: Connection, account_id: str, command_id: str, spec: CommandSpec, now_ms: int
) -> None:
    """Inserts a new command and its tags."""
    conn.execute(insert(COMMANDS).values(**command_values(account_id, command_id, spec, now_ms)))
    if spec.tags:
        conn.execute(
            insert(COMMAND_TAGS),
            [{"command_id": command_id, "key": k, "value": v} for k, v in spec.tags.items()],
        )


@lru_cache(maxsize=64)
def _tags_of(count: int) -> Select[Any]:
    """The tags of `count` commands."""
    return select(COMMAND_TAGS.c.command_id, COMMAND_TAGS.c.key, COMMAND_TAGS.c.value).where(
        in_list(COMMAND_TAGS.c.command_id, "p_command_id", count)
    )


def _with_tags(conn: Connection, commands: list[Command]) -> list[Command]:
    if not commands:
        return commands
    tags: dict[str, dict[str, str]] = defaultdict(dict)
    ids = [c.command_id for c in commands]
    for command_id, key, value in conn.execute(
        _tags_of(len(ids)), in_values("p_command_id", ids)
    ).all():
        tags[command_id][key] = value
    return [replace(c, spec=replace(c.spec, tags=tags.get(c.command_id, {}))) for c in commands]


def check_command_quota(conn: Connection, account_id: str, region_id: str, quota: int) -> None:
    count = conn.execute(
        select(func.count())
        .select_from(COMMANDS)
        .where(COMMANDS.c.account_id == account_id, COMMANDS.c.region_id == region_id)
    ).scalar_one()
    if count >= quota:
        raise ResourceExhausted(
            reasons.CMD_COUNT_EXCEED_QUOTA,
            f"region {region_id} already has {count} commands, the quota is {quota}; "
            "delete some first",
            field="region_id",
            metadata={"quota": str(quota), "region_id": region_id},
        )


def create_command(
    conn: Connection,
    account_id: str,
    command_id: str,
    spec: CommandSpec,
    now_ms: int,
    quota: int,
    idempotency: IdempotencyKey | None,
) -> str:
    """Stores a new command (or returns the one a retried client_token created)."""
    lock_scope(conn, account_id, spec.region_id)
    previous = replay(conn, idempotency)
    if previous is not None:
        return previous["command_id"]
    check_command_quota(conn, account_id, spec.region_id, quota)
    store_command(conn, account_id, command_id, spec, now_ms)
    remember(conn, idempotency, {"command_id": command_id}, now_ms)
    return command_id


def _scope(account_id: str, region_id: str) -> list[ColumnElement[bool]]:
    return [COMMANDS.c.account_id == account_id, COMMANDS.c.region_id == region_id]


_GET_COMMAND = select(COMMANDS).where(
    COMMANDS.c.account_id == bindparam("p_account_id"),
    COMMANDS.c.region_id == bindparam("p_region_id"),
    COMMANDS.c.command_id == bindparam("p_command_id"),
)


def get_command(conn: Connection, account_id: str, region_id: str, command_id: str) -> Command:
    row = conn.execute(
        _GET_COMMAND,
        {"p_account_id": account_id, "p_region_id": region_id, "p_command_id": command_id},
    ).first()
    if row is None:
        raise NotFound(
            reasons.COMMAND_NOT_FOUND,
            f"command_id: no command {command_id!r} in region {region_id}",
            field="command_id",
        )
    return _with_tags(conn, [convert.command(row)])[0]


def modify_command(
    conn: Connection,
    account_id: str,
    region_id: str,
    command_id: str,
    change: Callable[[CommandSpec], CommandSpec],
) -> None:
    """Applies `change` (which validates) to the stored command."""
    current = get_command(conn, account_id, region_id, command_id)
    spec = change(current.spec)
    conn.execute(
        update(COMMANDS)
        .where(COMMANDS.c.command_id == command_id)
        .values(
            name=spec.name,
            content=spec.content,
            description=spec.description,
            working_dir=spec.working_dir,
            timeout_seconds=spec.timeout_seconds,
            parameter_names=json.dumps(list(spec.parameter_names)),
        )
    )


# DescribeCommands' statements, built once per shape of its filters (which are set, and for
# each tag of the selector whether it names a value) and executed with parameters: building
# one cost more than SQLite takes to run it.
@lru_cache(maxsize=256)
def _command_listing(
    command_id: bool, name: bool, command_type: bool, tag_values: tuple[bool, ...], after: bool
) -> tuple[Count, Rows]:
    """The count and the page of list_commands for the filters that are set."""
    selector: list[tuple[TagTerm, TagTerm]] = [
        (bindparam(f"p_tag_key_{i}"), bindparam(f"p_tag_value_{i}") if valued else "")
        for i, valued in enumerate(tag_values)
    ]
    conditions = [
        COMMANDS.c.account_id == bindparam("p_account_id"),
        COMMANDS.c.region_id == bindparam("p_region_id"),
        *tagged_with(selector, COMMANDS.c.command_id, COMMAND_TAGS, COMMAND_TAGS.c.command_id),
    ]
    if command_id:
        conditions.append(COMMANDS.c.command_id == bindparam("p_command_id"))
    if name:
        conditions.append(contains_param(COMMANDS.c.name, bindparam("p_name", type_=String)))
    if command_type:
        conditions.append(COMMANDS.c.type == bindparam("p_type"))
    return counted_page(COMMANDS, COMMANDS.c.command_id, conditions, after, select(COMMANDS))


def list_commands(
    conn: Connection,
    account_id: str,
    region_id: str,
    command_id: str,
    name: str,
    command_type: CommandType | None,
    page: Page,
    tags: TagPairs = (),
) -> tuple[list[Command], int]:
    total_of, rows_of = _command_listing(
        bool(command_id),
        bool(name),
        command_type is not None,
        tuple(bool(value) for _, value in tags),
        page.after_id is not None,
    )
    params: dict[str, object] = {
        "p_account_id": account_id,
        "p_region_id": region_id,
        "p_command_id": command_id,
        "p_name": contains_value(name),
        "p_type": None if command_type is None else command_type.value,
        "p_after_id": page.after_id,
        "p_limit": page.size + 1,
    }
    for i, (key, value) in enumerate(tags):
        params[f"p_tag_key_{i}"] = key
        params[f"p_tag_value_{i}"] = value
    rows = conn.execute(rows_of, params).all()
    total = page_total(conn, total_of, params, page, len(rows))
    return _with_tags(conn, [convert.command(row) for row in rows]), total


def delete_command(conn: Connection, account_id: str, region_id: str, command_id: str) -> None:
    result = conn.execute(
        delete(COMMANDS).where(*_scope(account_id, region_id), COMMANDS.c.command_id == command_id)
    )
    if result.rowcount == 0:
        raise NotFound(
            reasons.COMMAND_NOT_FOUND,
            f"command_id: no command {command_id!r} in region {region_id}",
            field="command_id",
        )
    conn.execute(delete(COMMAND_TAGS).where(COMMAND_TAGS.c.command_id == command_id))


_COUNT_INVOCATION = (
    update(COMMANDS)
    .where(COMMANDS.c.command_id == bindparam("p_command_id"))
    .values(invoke_times=COMMANDS.c.invoke_times + 1)
)


def count_invocation(conn: Connection, command_id: str) -> None:
    conn.execute(_COUNT_INVOCATION, {"p_command_id": command_id})
