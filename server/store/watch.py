"""Repository reads for watchers of an invocation: its status and records, with each record's
output from where the watcher is, in one snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Connection, select

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import NotFound
from cloudassist.server.domain.model import Record
from cloudassist.server.domain.status import InvokeStatus
from cloudassist.server.store.invocations import invocation_not_found, invocation_scope
from cloudassist.server.store.output import read_ranges
from cloudassist.server.store.results import RECORD_COLUMNS, record_of
from cloudassist.server.store.tables import INVOCATION_INSTANCES, INVOCATIONS, RECORDS


@dataclass(frozen=True)
class RecordProgress:
    """What a watcher needs of one record."""

    record: Record
    agent_done: bool
    # Output from the watcher's offset on (at most `chunk` bytes), read with the states.
    new_output: bytes = b""


@dataclass(frozen=True)
class WatchSnapshot:
    status: InvokeStatus
    records: list[RecordProgress]


def watch_snapshot(
    conn: Connection,
    account_id: str,
    region_id: str,
    invoke_id: str,
    instance_id: str,
    sent: Mapping[str, int] | None = None,
    chunk: int = 1024 * 1024,
    checked: bool = False,
) -> WatchSnapshot:
    """The invocation's status and records, with each record's output from `sent[record_id]`
    (0 when absent) on: one read for states and output alike.

    The status comes from the records' own statement: SQLite (without BEGIN) and PostgreSQL
    (READ COMMITTED) give each statement its own snapshot, and a status read apart could
    predate the records, so a watcher would see the last record end while still Running.

    `checked`: an earlier look of the same watcher found the invocation in the caller's
    scope (and the instance in it), so this look reads only the records."""
    found = None if checked else _check_watched(conn, account_id, region_id, invoke_id, instance_id)
    conditions = [RECORDS.c.invoke_id == invoke_id]
    if instance_id:
        conditions.append(RECORDS.c.instance_id == instance_id)
    rows = conn.execute(
        select(
            *RECORD_COLUMNS,
            RECORDS.c.agent_done,
            INVOCATIONS.c.status.label("invocation_status"),
        )
        .select_from(RECORDS.join(INVOCATIONS, RECORDS.c.invoke_id == INVOCATIONS.c.invoke_id))
        .where(*conditions)
        .order_by(RECORDS.c.record_id)
    ).all()
    records = [(record_of(row), bool(row.agent_done)) for row in rows]
    ranges: dict[str, tuple[int, int]] = {}
    for record, _ in records:
        offset = (sent or {}).get(record.record_id, 0)
        if offset < record.output_size:
            ranges[record.record_id] = (offset, min(record.output_size, offset + chunk))
    new_output = read_ranges(conn, ranges) if ranges else {}
    progress = [
        RecordProgress(record, agent_done, new_output.get(record.record_id, b""))
        for record, agent_done in records
    ]
    if not rows:
        # No records (yet, or any more): the invocation itself says how it stands.
        status = (
            found
            if found is not None
            else _check_watched(conn, account_id, region_id, invoke_id, instance_id)
        )
    else:
        status = InvokeStatus(rows[0].invocation_status)
    return WatchSnapshot(status=status, records=progress)


def _check_watched(
    conn: Connection, account_id: str, region_id: str, invoke_id: str, instance_id: str
) -> InvokeStatus:
    """The invocation's status, once it is found in the caller's scope with `instance_id`
    (when given) among its instances."""
    row = conn.execute(
        select(INVOCATIONS.c.status).where(
            *invocation_scope(account_id, region_id), INVOCATIONS.c.invoke_id == invoke_id
        )
    ).first()
    if row is None:
        raise invocation_not_found(invoke_id, region_id)
    if (
        instance_id
        and not conn.execute(
            select(INVOCATION_INSTANCES.c.instance_id).where(
                INVOCATION_INSTANCES.c.invoke_id == invoke_id,
                INVOCATION_INSTANCES.c.instance_id == instance_id,
            )
        ).first()
    ):
        raise NotFound(
            reasons.INSTANCE_NOT_IN_INVOCATION,
            f"instance_id: {instance_id!r} is not an instance of invocation {invoke_id}",
            field="instance_id",
        )
    return InvokeStatus(row.status)
