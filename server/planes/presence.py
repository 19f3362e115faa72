"""Agents' hellos and goodbyes, stored in batches: those that wait while one batch is written
go together in the next transaction, in the order they came. A restarted server meets its
fleet at once (and a stopping one says goodbye to all of it); one transaction per agent, each
a hop to the writer thread and a commit, was what limited how fast the fleet came back. One
change alone is written at once, as before."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cloudassist.common.clock import now_ms
from cloudassist.server.domain.errors import Unauthenticated
from cloudassist.server.fleet.recorder import Recorder
from cloudassist.server.store.database import Database
from cloudassist.server.store.hello import (
    Goodbye,
    Hello,
    HelloStored,
    PresenceChange,
    presence_changes,
)

log = logging.getLogger(__name__)

# The most changes in one transaction: enough to amortise the commit and the thread hop, few
# enough that the first in a batch is not kept long for the last.
MAX_BATCH = 64

Outcome = HelloStored | Unauthenticated | None
Waiting = tuple[PresenceChange, "asyncio.Future[Outcome]"]


class PresenceBatches:
    def __init__(
        self,
        db: Database,
        recorder: Recorder,
        server_id: str,
        *,
        max_batch: int = MAX_BATCH,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._db = db
        self._recorder = recorder
        self._server_id = server_id
        self._max_batch = max_batch
        self._clock = clock
        self._waiting: list[Waiting] = []
        self._draining: asyncio.Task[None] | None = None
        # Transactions written and the changes in them (read by tests).
        self.batches = 0
        self.changes = 0

    async def hello(self, hello: Hello) -> HelloStored:
        """Stores the hello; raises Unauthenticated for an instance that is not registered or
        a wrong secret, or what the database raised."""
        outcome = await self._store(hello)
        if isinstance(outcome, Unauthenticated):
            raise outcome
        assert outcome is not None, "a hello's outcome"
        return outcome

    async def goodbye(self, instance_id: str) -> None:
        """Marks the instance offline (unless it has connected to another server since)."""
        await self._store(Goodbye(instance_id))

    async def _store(self, change: PresenceChange) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((change, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[Waiting] = []
        try:
            while self._waiting:
                # Let the changes that are ready in this turn of the loop join the batch.
                await asyncio.sleep(0)
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._store_batch(batch)
        except BaseException as error:  # cancelled at shutdown: no caller waits forever
            for _, future in [*batch, *self._waiting]:
                _settle(future, error)
            self._waiting = []
            raise

    async def _store_batch(self, batch: list[Waiting]) -> None:
        if any(isinstance(change, Hello) for change, _ in batch):
            # Reports still buffered from an earlier connection count before reconciling.
            await self._recorder.flush()
        try:
            outcomes = await self._write([change for change, _ in batch])
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0][1], error)
                return
            # One change's failure must not fail the others: each again on its own.
            log.warning("a batch of %d hellos failed (%s); storing each alone", len(batch), error)
            for change, future in batch:
                try:
                    (outcome,) = await self._write([change])
                except Exception as alone:
                    _settle(future, alone)
                else:
                    _settle(future, outcome)
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            _settle(future, outcome)

    async def _write(self, changes: list[PresenceChange]) -> list[Outcome]:
        self.batches += 1
        self.changes += len(changes)
        return await self._db.write(presence_changes, changes, self._clock(), self._server_id)


def _settle(future: asyncio.Future[Outcome], outcome: Outcome | BaseException) -> None:
    if future.done():  # its caller went away; the plane closes what a hello opened
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
