"""Finished records whose output is still to be copied out (--output-dir)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, func, or_, select, update

from cloudassist.server.domain.status import ExecutionState
from cloudassist.server.store.output import read_range
from cloudassist.server.store.tables import INVOCATIONS, RECORDS

TERMINAL = [s.value for s in ExecutionState if s.terminal]


@dataclass(frozen=True)
class FinishedRecord:
    record_id: str
    invoke_id: str
    instance_id: str
    region_id: str
    command_id: str
    state: str
    exit_code: int | None
    error_code: str
    dropped: int
    start_ms: int | None
    finish_ms: int | None
    output: bytes


def finished_undelivered(
    conn: Connection, now_ms: int, grace_ms: int, limit: int
) -> list[FinishedRecord]:
    """Terminal records not yet copied whose output is complete: the agent's last report is
    stored, or the record ended more than `grace_ms` ago (its agent is gone)."""
    ended = func.coalesce(RECORDS.c.finish_ms, RECORDS.c.stop_ms, RECORDS.c.created_ms)
    rows = conn.execute(
        select(RECORDS, INVOCATIONS.c.region_id, INVOCATIONS.c.command_id)
        .select_from(RECORDS.join(INVOCATIONS, RECORDS.c.invoke_id == INVOCATIONS.c.invoke_id))
        .where(
            RECORDS.c.delivered.is_(False),
            RECORDS.c.state.in_(TERMINAL),
            or_(RECORDS.c.agent_done.is_(True), and_(ended < now_ms - grace_ms)),
        )
        .order_by(RECORDS.c.record_id)
        .limit(limit)
    ).all()
    return [
        FinishedRecord(
            record_id=r.record_id,
            invoke_id=r.invoke_id,
            instance_id=r.instance_id,
            region_id=r.region_id,
            command_id=r.command_id,
            state=r.state,
            exit_code=r.exit_code,
            error_code=r.error_code,
            dropped=r.dropped,
            start_ms=r.start_ms,
            finish_ms=r.finish_ms or r.stop_ms,
            output=read_range(conn, r.record_id, 0, r.output_size),
        )
        for r in rows
    ]


def mark_delivered(conn: Connection, record_ids: Sequence[str]) -> None:
    if record_ids:
        conn.execute(
            update(RECORDS).where(RECORDS.c.record_id.in_(list(record_ids))).values(delivered=True)
        )
