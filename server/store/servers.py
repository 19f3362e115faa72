"""Repository functions for the servers sharing a database, and which agents each holds."""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select, update

from cloudassist.server.store.tables import INSTANCES, SERVERS


def heartbeat(conn: Connection, server_id: str, address: str, now_ms: int) -> None:
    updated = conn.execute(
        update(SERVERS).where(SERVERS.c.server_id == server_id).values(heartbeat_ms=now_ms)
    )
    if updated.rowcount == 0:
        conn.execute(
            insert(SERVERS).values(server_id=server_id, address=address, heartbeat_ms=now_ms)
        )


def sweep(conn: Connection, now_ms: int, stale_ms: int) -> int:
    """Forgets servers whose heartbeat is stale and marks their agents offline."""
    cutoff = now_ms - stale_ms
    conn.execute(delete(SERVERS).where(SERVERS.c.heartbeat_ms < cutoff))
    alive = select(SERVERS.c.server_id)
    result = conn.execute(
        update(INSTANCES)
        .where(INSTANCES.c.online.is_(True), INSTANCES.c.server_id.not_in(alive))
        .values(online=False)
    )
    return result.rowcount


def leave(conn: Connection, server_id: str) -> None:
    """A clean stop: this server's agents are offline (they reconnect elsewhere)."""
    conn.execute(delete(SERVERS).where(SERVERS.c.server_id == server_id))
    conn.execute(
        update(INSTANCES)
        .where(INSTANCES.c.server_id == server_id, INSTANCES.c.online.is_(True))
        .values(online=False)
    )
