"""The oldest generation is collected on the server's schedule, not by growth."""

from __future__ import annotations

import asyncio
import gc
import weakref

from cloudassist.server.jobs.collector import FULL_EVERY, NEVER, OldGenerationCollector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_install_stops_only_the_oldest_generation_and_uninstall_restores_it() -> None:
    before = gc.get_threshold()
    collector = OldGenerationCollector()
    collector.install()
    try:
        assert gc.get_threshold() == (before[0], before[1], NEVER)
    finally:
        collector.uninstall()
    assert gc.get_threshold() == before


def test_a_collection_frees_a_cycle_in_the_oldest_generation() -> None:
    collector = OldGenerationCollector()
    collector.install()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        gc.collect(1)  # into the oldest generation, which nothing collects automatically now
        gc.collect(1)
        del a, b
        assert gone() is not None
        assert collector.collect() >= 2
        assert gone() is None
        assert collector.collections == 1
    finally:
        collector.uninstall()


async def test_the_job_restores_the_thresholds_when_stopped() -> None:
    before = gc.get_threshold()
    job = asyncio.ensure_future(OldGenerationCollector(period=3600).run())
    await asyncio.sleep(0)  # the job installs itself on its first step
    assert gc.get_threshold()[2] == NEVER
    job.cancel()
    await asyncio.gather(job, return_exceptions=True)
    assert gc.get_threshold() == before


def test_what_a_collection_froze_is_freed_by_the_next_full_one() -> None:
    collector = OldGenerationCollector()
    collector.install()
    try:
        collector.collect()  # the first is full
        a, b = Node(), Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        collector.collect()  # a and b survive it, and are frozen
        del a, b
        for _ in range(FULL_EVERY - 2):
            collector.collect()
            assert gone() is not None, "a frozen cycle was collected before a full collection"
        collector.collect()  # the FULL_EVERY-th: thawed, then collected
        assert gone() is None
    finally:
        collector.uninstall()
    assert gc.get_freeze_count() == 0
