"""Repository functions for what clients list and read of invocations: the invocations, their
records with the tail of each one's output, the records of SendFile calls, and one record's
output."""

from __future__ import annotations

import json

from sqlalchemy import Connection, func, select

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import NotFound
from cloudassist.server.domain.files import FileSpec
from cloudassist.server.domain.model import Invocation, OutputSlice, Record
from cloudassist.server.domain.pagination import Page
from cloudassist.server.domain.status import InvokeStatus, states_with_status
from cloudassist.server.store import convert
from cloudassist.server.store.invocations import get_invocation, invocation_scope, invocations_of
from cloudassist.server.store.output import read_range
from cloudassist.server.store.search import contains_text
from cloudassist.server.store.tables import INVOCATION_INSTANCES, INVOCATIONS, RECORDS

RESULT_OUTPUT_TAIL = 24 * 1024


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
    conditions = [*invocation_scope(account_id, region_id), INVOCATIONS.c.file == ""]
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
    return invocations_of(conn, list(rows)), total


RECORD_COLUMNS = [
    *RECORDS.c,
    INVOCATIONS.c.region_id,
    INVOCATIONS.c.command_id,
    INVOCATIONS.c.username,
]


def record_of(row: object) -> Record:
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
        *invocation_scope(account_id, region_id),
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
        select(*RECORD_COLUMNS)
        .select_from(joined)
        .where(*conditions)
        .order_by(RECORDS.c.record_id.desc())
        .limit(page.size + 1)
    ).all()
    results = []
    for row in rows:
        record = record_of(row)
        start = max(0, record.output_size - RESULT_OUTPUT_TAIL)
        results.append((record, read_range(conn, record.record_id, start, record.output_size)))
    return results, total


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
            select(*RECORD_COLUMNS)
            .select_from(RECORDS.join(INVOCATIONS, RECORDS.c.invoke_id == INVOCATIONS.c.invoke_id))
            .where(*conditions)
        ).first()
        if row is None:
            raise NotFound(
                reasons.RECORD_NOT_FOUND,
                f"record_id: no record {record_id!r} in invocation {invoke_id}",
                field="record_id",
            )
        return record_of(row)
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
        select(*RECORD_COLUMNS)
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
    return record_of(row)


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
