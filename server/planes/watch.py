"""The watch plane: WatchInvocation and GetInvocationOutput, without gRPC: a record's output,
read from the store a range at a time or followed live with its state changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from cloudassist.common.clock import now_ms
from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.fields import check_region, check_required
from cloudassist.server.domain.model import OutputSlice, Record
from cloudassist.server.domain.status import InvokeStatus
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.planes.shared import PlaneSettings
from cloudassist.server.store import results as results_repo
from cloudassist.server.store import watch as watch_repo
from cloudassist.server.store.database import Database
from cloudassist.server.store.output import read_range
from cloudassist.server.store.watch import RecordProgress

MAX_OUTPUT_READ = 3 * 1024 * 1024
DEFAULT_OUTPUT_READ = 1024 * 1024
WATCH_CHUNK = 1024 * 1024
# A watcher reads the database at most this often (seconds).
WATCH_READ_INTERVAL = 0.01


@dataclass(frozen=True)
class OutputEvent:
    instance_id: str
    record_id: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class StateEvent:
    record: Record
    invocation_status: InvokeStatus


WatchEvent = OutputEvent | StateEvent


class WatchPlane:
    def __init__(self, db: Database, hub: Hub, settings: PlaneSettings) -> None:
        self._db = db
        self._hub = hub
        self._settings = settings

    async def get_output(
        self,
        account_id: str,
        region_id: str,
        invoke_id: str,
        instance_id: str,
        record_id: str,
        offset: int,
        limit: int,
    ) -> OutputSlice:
        check_region(region_id)
        check_required(invoke_id, "invoke_id", reasons.MISSING_INVOKE_ID)
        if offset < 0:
            raise InvalidArgument(
                reasons.INVALID_OUTPUT_RANGE, "offset: must not be negative", field="offset"
            )
        if limit < 0 or limit > MAX_OUTPUT_READ:
            raise InvalidArgument(
                reasons.INVALID_OUTPUT_RANGE,
                f"limit: must be between 0 and {MAX_OUTPUT_READ} (0 means {DEFAULT_OUTPUT_READ})",
                field="limit",
            )
        return await self._db.read(
            results_repo.read_output,
            account_id,
            region_id,
            invoke_id,
            instance_id,
            record_id,
            offset,
            limit or DEFAULT_OUTPUT_READ,
        )

    async def watch(
        self, account_id: str, region_id: str, invoke_id: str, instance_id: str
    ) -> AsyncIterator[list[WatchEvent]]:
        """Stored output and states first, then live changes; ends when the invocation is over
        (not Running, every record terminal and its agent's last output stored).

        Yields the events of each look at the invocation together (split where their output
        passes WATCH_CHUNK bytes), so that a client can take them in one message."""
        check_region(region_id)
        check_required(invoke_id, "invoke_id", reasons.MISSING_INVOKE_ID)
        sent: dict[str, int] = {}
        last_state: dict[str, tuple[object, ...]] = {}
        grace_ms = int(self._settings.output_grace_seconds * 1000)
        loop = asyncio.get_running_loop()
        last_read = -WATCH_READ_INTERVAL
        checked = False  # the first look checks the invocation's scope; later ones need not
        with self._hub.events.subscribe(invoke_id) as changed:
            while True:
                # Under load, changes come faster than a watcher needs to look: gather those of
                # a short interval into one read.
                wait = last_read + WATCH_READ_INTERVAL - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                changed.clear()
                # The first look (what is stored already) does not hold back the next: the
                # first change after it is read at once, and later ones gathered.
                last_read = loop.time() if checked else -WATCH_READ_INTERVAL
                snapshot = await self._db.read(
                    watch_repo.watch_snapshot,
                    account_id,
                    region_id,
                    invoke_id,
                    instance_id,
                    dict(sent),
                    WATCH_CHUNK,
                    checked,
                )
                checked = True
                events: list[WatchEvent] = []
                size = 0
                for progress in snapshot.records:
                    record = progress.record
                    offset = sent.get(record.record_id, 0)
                    data = progress.new_output or await self._output_after(record, offset)
                    while data:
                        # A batch holds at most WATCH_CHUNK bytes of output (or one chunk).
                        if events and size + len(data) > WATCH_CHUNK:
                            yield events
                            events, size = [], 0
                        event = OutputEvent(record.instance_id, record.record_id, offset, data)
                        events.append(event)
                        offset += len(data)
                        size += len(data)
                        data = await self._output_after(record, offset)
                    sent[record.record_id] = offset
                    key = (record.state, record.exit_code, record.error_code, record.dropped)
                    if last_state.get(record.record_id) != key:
                        last_state[record.record_id] = key
                        events.append(StateEvent(record, snapshot.status))
                if events:
                    yield events
                if snapshot.status is InvokeStatus.RUNNING:
                    await changed.wait()
                    continue
                now = now_ms()
                waits = [_output_wait_ms(p, now, grace_ms) for p in snapshot.records]
                if all(w == 0 for w in waits):
                    return
                pending = [w for w in waits if w is not None and w > 0]
                timeout = None if None in waits else min(pending) / 1000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout)

    async def _output_after(self, record: Record, offset: int) -> bytes:
        """The record's stored output from `offset` (at most WATCH_CHUNK bytes; empty: none)."""
        if offset >= record.output_size:
            return b""
        end = min(record.output_size, offset + WATCH_CHUNK)
        return await self._db.read(read_range, record.record_id, offset, end)


def _output_wait_ms(progress: RecordProgress, now: int, grace_ms: int) -> int | None:
    """0 when the record is over; None while it is active; else ms left to wait for output."""
    record = progress.record
    if not record.state.terminal:
        return None
    if progress.agent_done:
        return 0
    ended = record.finish_ms or record.stop_ms or now
    return max(0, ended + grace_ms - now)
