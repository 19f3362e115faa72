"""Enforces the stored deadlines: delivery (PENDING), execution (RUNNING), stop (STOPPING).

Deadlines live in the records, so they survive a restart and hold when the agent is gone.
"""

from __future__ import annotations

import asyncio
import logging

from server.clock import now_ms
from server.domain import reasons
from server.domain.status import ExecutionState
from server.hub import Hub
from server.logs import about
from server.store.agents import expire_due
from server.store.database import Database
from server.store.reports import CancelOrder

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, db: Database, hub: Hub, *, interval_seconds: float = 0.25) -> None:
        self._db = db
        self._hub = hub
        self._interval = interval_seconds

    async def sweep(self) -> int:
        """Expires what is due now; returns how many records changed."""
        effects = await self._db.write(expire_due, now_ms())
        _log_expired(effects.cancels)
        self._hub.carry_out(effects)
        return len(effects.cancels)

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("deadline sweep failed; retrying")
            await asyncio.sleep(self._interval)


def _log_expired(cancels: list[CancelOrder]) -> None:
    """One line per record a sweep ended (each has a cancel for its agent): a timeout, or a
    delivery (ABORTED) or stop confirmation (TERMINATED) deadline that passed."""
    for cancel in cancels:
        ids = about(instance_id=cancel.instance_id, record_id=cancel.record_id)
        if cancel.timeout:
            timed_out = about(
                state=ExecutionState.TIMEOUT.value, error_code=reasons.EXECUTION_TIMEOUT
            )
            log.info("record timed out: the script ran past its timeout", extra=ids | timed_out)
        else:
            log.info("record expired: its delivery or stop deadline passed", extra=ids)
