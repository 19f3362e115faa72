"""The report writer: a lone result is stored at once; reports that come while a batch is
being stored go together into the next transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from cloudassist.server.domain.reports import Effects, Report, TaskStart
from cloudassist.server.fleet.events import InvocationEvents
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.fleet.recorder import Recorder


class FakeDatabase:
    """Records the batches handed to the writer; `during_write` runs inside a write."""

    def __init__(self) -> None:
        self.batches: list[list[Report]] = []
        self.during_write: Callable[[], None] | None = None

    async def write(self, fn: Any, batch: Sequence[Report], now_ms: int) -> Effects:
        self.batches.append(list(batch))
        if self.during_write is not None:
            during, self.during_write = self.during_write, None
            during()
        return Effects()


def start(record: str) -> TaskStart:
    return TaskStart(record, "i-1", 1)


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


async def test_a_lone_report_is_stored_without_lingering(db: FakeDatabase) -> None:
    # A linger of a minute: if the writer lingered on a lone report, flush would time out.
    recorder = Recorder(db, Hub(InvocationEvents()), linger_seconds=60)  # type: ignore[arg-type]
    writer = asyncio.create_task(recorder.run())
    try:
        recorder.submit(start("r-1"))
        await asyncio.wait_for(recorder.flush(), 5)
        assert db.batches == [[start("r-1")]]
    finally:
        writer.cancel()


async def test_reports_that_arrive_during_a_write_go_in_one_next_batch(db: FakeDatabase) -> None:
    recorder = Recorder(db, Hub(InvocationEvents()), linger_seconds=0.001)  # type: ignore[arg-type]

    def two_more_arrive() -> None:
        recorder.submit(start("r-2"))
        recorder.submit(start("r-3"))

    db.during_write = two_more_arrive
    writer = asyncio.create_task(recorder.run())
    try:
        recorder.submit(start("r-1"))
        await asyncio.wait_for(recorder.flush(), 5)
        assert db.batches == [[start("r-1")], [start("r-2"), start("r-3")]]
    finally:
        writer.cancel()
