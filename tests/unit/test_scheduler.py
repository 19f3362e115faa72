"""The scheduler: it reads the earliest next fire time and writes only when a fire is due;
a next fire time set on this server wakes it at once."""

from __future__ import annotations

import asyncio
from typing import Any

from cloudassist.common.clock import now_ms
from cloudassist.server.domain.reports import Effects
from cloudassist.server.fleet.events import InvocationEvents
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.jobs.scheduler import Scheduler
from cloudassist.server.store.schedules import FirePolicy


class FakeDatabase:
    def __init__(self, upcoming: int | None) -> None:
        self.upcoming = upcoming
        self.reads = 0
        self.writes = 0
        self.read_done = asyncio.Event()
        self.write_done = asyncio.Event()

    async def read(self, fn: Any, *args: Any) -> int | None:
        self.reads += 1
        self.read_done.set()
        return self.upcoming

    async def write(self, fn: Any, *args: Any) -> Effects:
        self.writes += 1
        self.upcoming = None  # fired, nothing more scheduled
        self.write_done.set()
        return Effects()


def scheduler(db: FakeDatabase) -> Scheduler:
    policy = FirePolicy(0, 0, 0, schedule_for=lambda *_: None, new_record_id=str)  # type: ignore[arg-type, return-value]
    # A minute between idle looks: only wake() can make it look again within the test.
    return Scheduler(db, Hub(InvocationEvents()), policy, idle_look_seconds=60)  # type: ignore[arg-type]


async def test_nothing_due_costs_a_read_and_no_write_transaction() -> None:
    db = FakeDatabase(upcoming=now_ms() + 3_600_000)
    running = asyncio.create_task(scheduler(db).run())
    try:
        await asyncio.wait_for(db.read_done.wait(), 5)
        assert db.writes == 0
    finally:
        running.cancel()


async def test_a_fire_time_set_here_wakes_the_scheduler_at_once() -> None:
    db = FakeDatabase(upcoming=None)
    fires = scheduler(db)
    running = asyncio.create_task(fires.run())
    try:
        await asyncio.wait_for(db.read_done.wait(), 5)
        db.upcoming = now_ms() - 1  # a new invocation's first fire, due now
        fires.wake()
        await asyncio.wait_for(db.write_done.wait(), 5)
        assert db.writes == 1
    finally:
        running.cancel()
