"""Fires periodic invocations on time, from the next fire times stored with them.

The scheduler sleeps until the earliest stored next fire time (read, not written, when
nothing is due), woken early when this server sets a new one, and looks again at least every
IDLE_LOOK_SECONDS for fire times set by other servers. After a restart, fires missed while
the server was down are skipped, not replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cloudassist.common.clock import now_ms
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.store.database import Database
from cloudassist.server.store.schedules import FirePolicy, fire_due, next_fire_ms

log = logging.getLogger(__name__)

# The longest the scheduler sleeps without looking at the stored fire times.
IDLE_LOOK_SECONDS = 1.0
# After a failed look.
RETRY_SECONDS = 0.5
# The shortest sleep between looks: a fire another server is claiming right now stays due
# until that server commits.
MIN_SLEEP_SECONDS = 0.01


class Scheduler:
    def __init__(
        self,
        db: Database,
        hub: Hub,
        policy: FirePolicy,
        *,
        idle_look_seconds: float = IDLE_LOOK_SECONDS,
    ) -> None:
        self._db = db
        self._hub = hub
        self._policy = policy
        self._idle_look = idle_look_seconds
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """A next fire time was set or changed here: look again now."""
        self._woken.set()

    async def tick(self) -> int | None:
        """Fires what is due; returns the earliest next fire time left (None: none)."""
        upcoming = await self._db.read(next_fire_ms)
        if upcoming is None or upcoming > now_ms():
            return upcoming
        effects = await self._db.write(fire_due, now_ms(), self._policy)
        self._hub.carry_out(effects)
        return await self._db.read(next_fire_ms)

    async def run(self) -> None:
        while True:
            self._woken.clear()
            try:
                upcoming = await self.tick()
                delay = self._idle_look
                if upcoming is not None:
                    delay = min(delay, max(MIN_SLEEP_SECONDS, (upcoming - now_ms()) / 1000))
            except Exception:
                log.exception("scheduling failed; retrying")
                delay = RETRY_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), delay)
