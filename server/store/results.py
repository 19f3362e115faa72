"""Repository functions for what clients list and read of invocations: the invocations, their
records with the tail of each one's output, the records of SendFile calls, and one record's
output."""

from __future__ import annotations

import json
from functools import lru_cache

from sqlalchemy import BindParameter, Connection, String, and_, bindparam, func, select

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import NotFound
from cloudassist.server.domain.files import FileSpec
from cloudassist.server.domain.model import Invocation, OutputSlice, Record
from cloudassist.server.domain.pagination import Page
from cloudassist.server.domain.status import InvokeStatus, states_with_status
from cloudassist.server.store import convert
from cloudassist.server.store.invocations import get_invocation, invocations_of
from cloudassist.server.store.output import read_range, read_ranges
from cloudassist.server.store.search import contains_param, contains_value
from cloudassist.server.store.statements import (
    Count,
    Rows,
    counted_page,
    in_list,
    in_values,
    page_total,
)
from cloudassist.server.store.tables import (
    INVOCATION_INSTANCES,
    INVOCATIONS,
    OUTPUT_CHUNKS,
    RECORDS,
)

RESULT_OUTPUT_TAIL = 24 * 1024


# The listings' statements are built once per shape of their filters (which are set) and
# executed with parameters: building one (its values coerced, its cache key computed) cost
# more than SQLite takes to run it. The shapes are few: one flag per filter.
_ACCOUNT: BindParameter[str] = bindparam("p_account_id")
_REGION: BindParameter[str] = bindparam("p_region_id")


@lru_cache(maxsize=128)
def _invocation_listing(
    invoke_id: bool,
    command_id: bool,
    command_name: bool,
    instance_id: bool,
    status: bool,
    after: bool,
) -> tuple[Count, Rows]:
    """The count and the page of list_invocations for the filters that are set."""
    # SendFile invocations are listed by DescribeSendFileResults, not here.
    conditions = [
        INVOCATIONS.c.account_id == _ACCOUNT,
        INVOCATIONS.c.region_id == _REGION,
        INVOCATIONS.c.file == "",
    ]
    if invoke_id:
        conditions.append(INVOCATIONS.c.invoke_id == bindparam("p_invoke_id"))
    if command_id:
        conditions.append(INVOCATIONS.c.command_id == bindparam("p_command_id"))
    if command_name:
        conditions.append(
            contains_param(INVOCATIONS.c.command_name, bindparam("p_command_name", type_=String))
        )
    if instance_id:
        conditions.append(
            INVOCATIONS.c.invoke_id.in_(
                select(INVOCATION_INSTANCES.c.invoke_id).where(
                    INVOCATION_INSTANCES.c.instance_id == bindparam("p_instance_id")
                )
            )
        )
    if status:
        conditions.append(INVOCATIONS.c.status == bindparam("p_status"))
    return counted_page(
        INVOCATIONS, INVOCATIONS.c.invoke_id, conditions, after, select(INVOCATIONS)
    )


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
    total_of, rows_of = _invocation_listing(
        bool(invoke_id),
        bool(command_id),
        bool(command_name),
        bool(instance_id),
        status is not None,
        page.after_id is not None,
    )
    params = {
        "p_account_id": account_id,
        "p_region_id": region_id,
        "p_invoke_id": invoke_id,
        "p_command_id": command_id,
        "p_command_name": contains_value(command_name),
        "p_instance_id": instance_id,
        "p_status": None if status is None else status.value,
        "p_after_id": page.after_id,
        "p_limit": page.size + 1,
    }
    rows = conn.execute(rows_of, params).all()
    total = page_total(conn, total_of, params, page, len(rows))
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


@lru_cache(maxsize=128)
def _result_listing(
    invoke_id: bool,
    instance_id: bool,
    command_id: bool,
    states: int,
    include_history: bool,
    files: bool,
    after: bool,
) -> tuple[Count, Rows]:
    """The count and the page of list_results for the filters that are set (`states`: how
    many states the status filter stands for, 0 without one)."""
    conditions = [
        INVOCATIONS.c.account_id == _ACCOUNT,
        INVOCATIONS.c.region_id == _REGION,
        INVOCATIONS.c.file != "" if files else INVOCATIONS.c.file == "",
    ]
    if invoke_id:
        conditions.append(RECORDS.c.invoke_id == bindparam("p_invoke_id"))
    if instance_id:
        conditions.append(RECORDS.c.instance_id == bindparam("p_instance_id"))
    if command_id:
        conditions.append(INVOCATIONS.c.command_id == bindparam("p_command_id"))
    if states:
        conditions.append(in_list(RECORDS.c.state, "p_state", states))
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
    # An output stored as one chunk that the tail holds whole (a quick task's) comes with its
    # record, which saves reading it apart.
    whole = joined.outerjoin(
        OUTPUT_CHUNKS,
        and_(
            OUTPUT_CHUNKS.c.record_id == RECORDS.c.record_id,
            OUTPUT_CHUNKS.c.offset == 0,
            OUTPUT_CHUNKS.c.end_offset == RECORDS.c.output_size,
            RECORDS.c.output_size <= RESULT_OUTPUT_TAIL,
        ),
    )
    rows = select(*RECORD_COLUMNS, OUTPUT_CHUNKS.c.data.label("whole_output")).select_from(whole)
    return counted_page(joined, RECORDS.c.record_id, conditions, after, rows)


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
    states = [] if status is None else [s.value for s in states_with_status(status)]
    total_of, rows_of = _result_listing(
        bool(invoke_id),
        bool(instance_id),
        bool(command_id),
        len(states),
        include_history,
        files,
        page.after_id is not None,
    )
    params = {
        "p_account_id": account_id,
        "p_region_id": region_id,
        "p_invoke_id": invoke_id,
        "p_instance_id": instance_id,
        "p_command_id": command_id,
        **in_values("p_state", states),
        "p_after_id": page.after_id,
        "p_limit": page.size + 1,
    }
    rows = conn.execute(rows_of, params).all()
    total = page_total(conn, total_of, params, page, len(rows))
    records = [record_of(row) for row in rows]
    tails = {
        r.record_id: bytes(row.whole_output)
        for r, row in zip(records, rows, strict=True)
        if row.whole_output is not None
    }
    rest = {
        r.record_id: (max(0, r.output_size - RESULT_OUTPUT_TAIL), r.output_size)
        for r in records
        if r.record_id not in tails
    }
    if rest:
        tails.update(read_ranges(conn, rest))
    return [(r, tails.get(r.record_id, b"")) for r in records], total


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
