"""This server's heartbeat in the servers table: the agents of servers that stopped beating
go offline, and so do instances marked online here without a session."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from cloudassist.common.clock import now_ms
from cloudassist.server.store import servers
from cloudassist.server.store.database import Database

log = logging.getLogger(__name__)

PRESENCE_SECONDS = 5.0
# A server whose heartbeat is older than this is gone; its agents are offline.
PRESENCE_STALE_MS = 20_000


class Presence:
    def __init__(
        self,
        db: Database,
        server_id: str,
        address: str,
        reconcile: Callable[[], Awaitable[object]],
    ) -> None:
        self._db = db
        self._server_id = server_id
        self._address = address
        # Sets offline the instances marked online here that have no session.
        self._reconcile = reconcile

    async def beat(self) -> None:
        """One heartbeat of this server, and the sweep of the servers that stopped beating."""
        await self._db.write(servers.heartbeat, self._server_id, self._address, now_ms())
        await self._db.write(servers.sweep, now_ms(), PRESENCE_STALE_MS)

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
                await self._reconcile()
            except Exception:
                log.exception("server heartbeat failed; retrying")
            await asyncio.sleep(PRESENCE_SECONDS)
