"""Enforces the stored deadlines: delivery (PENDING), execution (RUNNING), stop (STOPPING).

Deadlines live in the records, so they survive a restart and hold when the agent is gone.
Each sweep first reads the earliest deadline, and takes the writer only when one has passed.
"""

from __future__ import annotations

import asyncio
import logging

from cloudassist.common.clock import now_ms
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.store.database import Database
from cloudassist.server.store.deadlines import earliest_deadline_ms, expire_due

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, db: Database, hub: Hub, *, interval_seconds: float = 0.25) -> None:
        self._db = db
        self._hub = hub
        self._interval = interval_seconds

    async def sweep(self) -> int:
        """Expires what is due now; returns how many records changed."""
        earliest = await self._db.read(earliest_deadline_ms)
        if earliest is None or earliest > now_ms():
            return 0
        effects = await self._db.write(expire_due, now_ms())
        self._hub.carry_out(effects)
        return len(effects.cancels)

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("deadline sweep failed; retrying")
            await asyncio.sleep(self._interval)
