"""The garbage collector's oldest generation, collected on a schedule instead of by growth.

CPython collects its oldest generation, walking every tracked object, whenever it has grown
by a quarter since the last time. A server holding tens of thousands of agents has millions of
long-lived objects, and every agent stream keeps a read outstanding for a whole heartbeat
interval, so the objects of each read live long enough to reach that generation: at 50,000
idle agents the oldest generation was collected every few seconds, about a fifth of a core
(py-spy: `gc_collect_main`, mostly under the heartbeat batch that set it off). Here the young
generations are collected as before, and the oldest every `period` seconds; what survives is
frozen, so that the next collections walk only what is newer (a whole-heap walk at 50,000
agents takes seconds), and thawed every few collections.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger(__name__)

COLLECT_SECONDS = 60.0
# Every this many collections, the frozen objects are collected too.
FULL_EVERY = 10
# A threshold the oldest generation's counter never reaches.
NEVER = 2**31 - 1


class OldGenerationCollector:
    def __init__(self, period: float = COLLECT_SECONDS) -> None:
        self._period = period
        self._thresholds: tuple[int, int, int] | None = None
        self.collections = 0

    def install(self) -> None:
        """Stops automatic collection of the oldest generation (the younger ones go on)."""
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
            gc.set_threshold(self._thresholds[0], self._thresholds[1], NEVER)

    def uninstall(self) -> None:
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
            gc.unfreeze()

    def collect(self) -> int:
        """One collection; returns the unreachable objects found. What survives it is frozen
        (left out of later collections: the connected agents' objects, mostly), and every
        `FULL_EVERY`th collection thaws it first, so a frozen object that became garbage
        waits at most that many periods."""
        started = time.perf_counter()
        if self.collections % FULL_EVERY == 0:
            gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.collections += 1
        took = time.perf_counter() - started
        if took > 0.1:
            log.info("garbage collection took %.2f s (%d unreachable objects)", took, found)
        return found

    async def run(self) -> None:
        self.install()
        try:
            while True:
                await asyncio.sleep(self._period)
                self.collect()
        finally:
            self.uninstall()
