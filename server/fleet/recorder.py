"""The one batching writer for what agents report: output, starts, results, heartbeats.

Reports are stored in arrival order, in batches: while one batch is being committed the next
one gathers (group commit), so a quiet system stores a result at once and a busy one makes
few large transactions. Acknowledgements go out only after the commit. Heartbeats only move
`last_heartbeat_time`: they are kept in memory and written with the next batch, or every few
seconds, rather than waking the writer one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from cloudassist.common.clock import now_ms
from cloudassist.server.domain.reports import Effects, HeartbeatSeen, Report
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.metrics import Metrics
from cloudassist.server.store.database import Database
from cloudassist.server.store.reports import apply_reports

log = logging.getLogger(__name__)

HEARTBEAT_FLUSH_SECONDS = 5.0
RETRY_SECONDS = 0.5


class Recorder:
    def __init__(
        self,
        db: Database,
        hub: Hub,
        *,
        linger_seconds: float = 0.005,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._metrics = metrics or Metrics()
        self._hub = hub
        self._linger = linger_seconds
        self._pending: list[Report] = []
        self._heartbeats: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_stored = -float("inf")

    def submit(self, report: Report) -> None:
        self._pending.append(report)
        self._idle.clear()
        self._wake.set()

    def submit_all(self, reports: Sequence[Report]) -> None:
        if reports:
            self._pending.extend(reports)
            self._idle.clear()
            self._wake.set()

    def heartbeat(self, instance_id: str, time_ms: int) -> None:
        self._heartbeats[instance_id] = time_ms

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), HEARTBEAT_FLUSH_SECONDS)
            loop = asyncio.get_running_loop()
            # Linger (gather more reports into one transaction) only while reports keep coming:
            # the previous batch was stored less than a linger ago. A lone result goes at once.
            busy = loop.time() - self._last_stored < self._linger
            if self._linger and busy and self._wake.is_set():
                await asyncio.sleep(self._linger)
            self._wake.clear()
            batch: list[Report] = [HeartbeatSeen(i, t) for i, t in self._heartbeats.items()]
            self._heartbeats = {}
            batch += self._pending
            self._pending = []
            if batch:
                self._hub.carry_out(await self._store(batch))
                self._last_stored = loop.time()
            if not self._pending:
                self._idle.set()

    async def _store(self, batch: list[Report]) -> Effects:
        """Stores a batch; if it fails twice, report by report, so that one bad report (or a
        database hiccup) costs only itself: the agent re-sends what was not acknowledged."""
        for attempt in range(2):
            try:
                started = time.perf_counter()
                effects = await self._db.write(apply_reports, batch, now_ms())
                self._metrics.db_flush_seconds.observe(time.perf_counter() - started)
                self._metrics.agent_reports.inc(len(batch))
                return effects
            except Exception:
                log.exception(
                    "storing %d agent reports failed (attempt %d)", len(batch), attempt + 1
                )
                await asyncio.sleep(RETRY_SECONDS)
        effects = Effects()
        for report in batch:
            try:
                effects.merge(await self._db.write(apply_reports, [report], now_ms()))
            except Exception:
                log.exception("dropped an agent report that cannot be stored: %r", report)
        return effects

    async def flush(self) -> None:
        """Waits until everything submitted so far is committed."""
        await self._idle.wait()
