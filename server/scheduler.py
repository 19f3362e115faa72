"""Fires periodic invocations on time, from the next fire times stored with them.

After a restart, fires missed while the server was down are skipped, not replayed.
"""

from __future__ import annotations

import asyncio
import logging

from server.clock import now_ms
from server.hub import Hub
from server.store.database import Database
from server.store.schedules import FirePolicy, fire_due

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self, db: Database, hub: Hub, policy: FirePolicy, *, interval_seconds: float = 0.1
    ) -> None:
        self._db = db
        self._hub = hub
        self._policy = policy
        self._interval = interval_seconds

    async def tick(self) -> None:
        effects = await self._db.write(fire_due, now_ms(), self._policy)
        self._hub.carry_out(effects)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduling failed; retrying")
            await asyncio.sleep(self._interval)
