"""Figures for the metrics: counts the database keeps anyway, read in one query each."""

from __future__ import annotations

from sqlalchemy import Connection, func, select, text

from cloudassist.server.store.tables import RECORDS


def records_by_state(conn: Connection, timeout_ms: int | None = None) -> dict[str, int]:
    """How many records are in each state (states with none are absent).

    `timeout_ms` bounds the query on PostgreSQL, where a table lock (a migration, a VACUUM
    FULL) would otherwise hold the scrape; it needs a transaction (`engine.begin()`). SQLite
    readers in WAL mode wait for nobody."""
    if timeout_ms is not None and conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(timeout_ms)}
        )
    rows = conn.execute(select(RECORDS.c.state, func.count()).group_by(RECORDS.c.state)).all()
    return {state: count for state, count in rows}


def ping(conn: Connection) -> None:
    """Raises when the database does not answer."""
    conn.execute(text("SELECT 1"))
