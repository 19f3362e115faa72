"""Transaction-scoped locks for check-then-insert rules (quotas, client tokens).

SQLite runs every write on one writer thread, so nothing can interleave there. PostgreSQL is
shared by several servers: an advisory lock held until commit serialises the writers of one
account and region.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:key))")


def lock_scope(conn: Connection, *key: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK, {"key": "/".join(key)})
