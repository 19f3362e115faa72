"""The agent's state directory: its registration, and every task it holds (in the journal).

Nothing is forgotten until the server acknowledges it, so output and results survive a lost
connection, a server restart, or a restart of the agent itself.

    STATE_DIR/credentials.json   the instance id and secret from registration (0600)
    STATE_DIR/journal            what to run, the process, output, results (agent/journal.py)
    STATE_DIR/scripts/           the scripts of running tasks

The agent hands records to `Spool.append` on the event loop; they are written by the one
I/O thread in batches: everything appended while one write is under way goes out in the next
(group commit), so tasks that start and end together share their writes.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cloudassist.agent.journal import Journal
from cloudassist.agent.records import Forget, Record, Release, TaskMeta, TaskResult

__all__ = ["Credentials", "Spool", "SpooledTask", "TaskMeta", "TaskResult"]

T = TypeVar("T")

# Output handed to the journal and not yet written: past this, the output pump waits.
MAX_UNWRITTEN = 8 * 1024 * 1024
# Records that wait for the next write rather than cause one (forgets, releases): at most this
# many before they are written on their own.
LAZY_RECORDS = 256
# Output waiting for a lingering write: past this, it is written at once.
LINGER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Credentials:
    """What registration gave this agent; the secret authenticates every hello."""

    instance_id: str
    instance_secret: str
    region_id: str


@dataclass
class SpooledTask:
    """A task the agent holds, as the event loop sees it."""

    meta: TaskMeta
    # Bytes of output written to the journal (and so safe to send).
    size: int = 0
    # Bytes of output handed to the journal, written or not.
    appended: int = 0
    # The newest output, also kept in memory (bytes [recent_offset, size)), so that sending it
    # needs no read back from disk; older bytes are read from the journal.
    recent: bytearray = field(default_factory=bytearray)
    recent_offset: int = 0

    def __post_init__(self) -> None:
        self.appended = max(self.appended, self.size)
        self.recent_offset = self.size - len(self.recent)

    def remember(self, data: bytes, keep: int) -> None:
        """Counts output the journal has written and keeps the newest `keep` bytes in memory."""
        self.size += len(data)
        self.recent += data
        excess = len(self.recent) - keep
        if excess > 0:
            del self.recent[:excess]
        self.recent_offset = self.size - len(self.recent)

    def cached(self, offset: int, length: int) -> bytes | None:
        """Output from memory, or None when it must be read from the journal."""
        if not self.recent_offset <= offset < self.recent_offset + len(self.recent):
            return None
        start = offset - self.recent_offset
        return bytes(self.recent[start : start + length])

    def release(self, upto: int) -> None:
        """The server has stored output up to `upto`: memory before it is not needed."""
        drop = min(upto, self.size) - self.recent_offset
        if drop > 0:
            del self.recent[:drop]
            self.recent_offset += drop


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]


class Spool:
    def __init__(self, root: Path, io: Executor) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self.scripts_dir = root / "scripts"
        self.scripts_dir.mkdir(mode=0o700, exist_ok=True)
        self._io = io
        self._journal = Journal(root)
        self._done: set[str] = set()
        self._pending: list[Record | _Call] = []
        self._pending_bytes = 0
        self._batch_written: asyncio.Future[None] | None = None
        # The batch being written now.
        self._in_flight: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # Registration (blocking: called through the I/O thread) ---------------------------

    def credentials(self) -> Credentials | None:
        """The instance's registration, if the agent has registered."""
        path = self.root / "credentials.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return Credentials(data["instance_id"], data["instance_secret"], data["region_id"])

    def save_credentials(self, credentials: Credentials) -> None:
        path = self.root / "credentials.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(credentials), out)
        tmp.replace(path)

    # Tasks -----------------------------------------------------------------------------

    async def load(self) -> list[SpooledTask]:
        """Every task the journal holds (each with its output size)."""
        journal = self._journal
        await asyncio.get_running_loop().run_in_executor(self._io, journal.open)
        self._done = set(journal.done)
        return [SpooledTask(t.meta, size=t.size) for t in journal.tasks.values()]

    def knows(self, task_id: str) -> bool:
        """Whether the server has already stored everything of `task_id`."""
        return task_id in self._done

    def append(self, record: Record, linger: float = 0.0) -> asyncio.Future[None]:
        """Queues `record` for the journal; the future is done once it is written.

        `linger`: the write may wait this long for the next record that cannot wait (a
        quick task's output then goes to disk with its result, in one trip to the I/O
        thread), unless LINGER_BYTES are already waiting."""
        self._pending.append(record)
        if linger <= 0 or self._pending_bytes >= LINGER_BYTES:
            return self._schedule()
        loop = asyncio.get_running_loop()
        if self._batch_written is None:
            self._batch_written = loop.create_future()
        if self._linger_timer is None and self._flusher is None:
            self._linger_timer = loop.call_later(linger, self._linger_over)
        return self._batch_written

    def _linger_over(self) -> None:
        self._linger_timer = None
        if self._pending:
            self._schedule()

    def output_backlog(self) -> int:
        return self._pending_bytes

    def note_output(self, length: int) -> None:
        self._pending_bytes += length

    async def call(self, fn: Callable[[], T]) -> T:
        """Runs `fn` on the I/O thread right after the records appended before it are
        written (so it can rely on them)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(fn, future))
        self._schedule()
        return await future

    async def read(self, task_id: str, offset: int, length: int) -> bytes:
        journal = self._journal
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, journal.read, task_id, offset, length)

    def forget(self, task_id: str) -> None:
        """The server stored everything of this task: the journal drops it (with the next
        write: until then, a restart finds the task again, and the server acknowledges it
        again)."""
        self._done.add(task_id)
        self._queue_lazily(Forget(task_id))

    def release(self, task_id: str, upto: int) -> None:
        """The server stored the task's output below `upto` (the journal need not keep it)."""
        self._queue_lazily(Release(task_id, upto))

    def _queue_lazily(self, record: Record) -> None:
        self._pending.append(record)
        if len(self._pending) >= LAZY_RECORDS:
            self._schedule()

    async def flush(self) -> None:
        """Waits until everything appended so far is written."""
        if self._pending:
            await self._schedule()
        elif self._in_flight is not None:
            await self._in_flight

    async def close(self) -> None:
        await self.flush()
        await asyncio.get_running_loop().run_in_executor(self._io, self._journal.close)

    def _schedule(self) -> asyncio.Future[None]:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._batch_written is None:
            self._batch_written = asyncio.get_running_loop().create_future()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_batches())
        return self._batch_written

    async def _flush_batches(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                written, self._batch_written = self._batch_written, None
                self._in_flight = written
                self._pending_bytes = 0
                try:
                    results = await loop.run_in_executor(
                        self._io, _write_batch, self._journal, batch
                    )
                except BaseException as exc:
                    if written is not None and not written.done():
                        written.set_exception(exc)
                        written.exception()  # whoever awaits it sees it; nobody must
                    for item in batch:
                        if isinstance(item, _Call) and not item.future.done():
                            item.future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                calls = [i for i in batch if isinstance(i, _Call)]
                for item, outcome in zip(calls, results, strict=True):
                    if item.future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        item.future.set_exception(outcome)
                    else:
                        item.future.set_result(outcome)
                if written is not None and not written.done():
                    written.set_result(None)
        finally:
            self._flusher = None
            self._in_flight = None


def _write_batch(journal: Journal, batch: list[Record | _Call]) -> list[object]:
    """On the I/O thread: the records between calls in one write each, then each call."""
    results: list[object] = []
    records: list[Record] = []
    for item in batch:
        if isinstance(item, _Call):
            journal.write(records)
            records = []
            try:
                results.append(item.fn())
            except Exception as exc:  # delivered to whoever awaits the call
                results.append(exc)
        else:
            records.append(item)
    journal.write(records)
    return results
