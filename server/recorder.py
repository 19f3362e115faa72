"""The one batching writer for what agents report: output, starts, results, heartbeats.

Reports are stored in arrival order, in batches: while one batch is being committed the next
one gathers (group commit), so a quiet system stores a result at once and a busy one makes
few large transactions. Acknowledgements go out only after the commit.
"""

from __future__ import annotations

import asyncio
import logging

from server.clock import now_ms
from server.hub import Hub
from server.store.agents import apply_reports
from server.store.database import Database
from server.store.reports import OutputAppend, Report

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, db: Database, hub: Hub, *, linger_seconds: float = 0.005) -> None:
        self._db = db
        self._hub = hub
        self._linger = linger_seconds
        self._pending: list[Report] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def submit(self, report: Report) -> None:
        self._pending.append(report)
        self._idle.clear()
        self._wake.set()

    def pending_bytes(self) -> int:
        return sum(len(r.data) for r in self._pending if isinstance(r, OutputAppend))

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if self._linger:
                await asyncio.sleep(self._linger)
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    effects = await self._db.write(apply_reports, batch, now_ms())
                except Exception:
                    # The agents re-send whatever was not acknowledged after they reconnect.
                    log.exception("storing %d agent reports failed", len(batch))
                else:
                    self._hub.carry_out(effects)
            if not self._pending:
                self._idle.set()

    async def flush(self) -> None:
        """Waits until everything submitted so far is committed."""
        await self._idle.wait()
