"""Figures for the metrics: counts the database keeps anyway, read in one query each."""

from __future__ import annotations

from sqlalchemy import Connection, func, select, text

from server.store.tables import RECORDS


def records_by_state(conn: Connection) -> dict[str, int]:
    """How many records are in each state (states with none are absent)."""
    rows = conn.execute(select(RECORDS.c.state, func.count()).group_by(RECORDS.c.state)).all()
    return {state: count for state, count in rows}


def ping(conn: Connection) -> None:
    """Raises when the database does not answer."""
    conn.execute(text("SELECT 1"))
