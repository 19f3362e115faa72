"""Runs repository functions off the event loop: one writer thread, a few reader threads.

One writer keeps SQLite free of lock contention and makes quota checks atomic; WAL lets the
readers proceed while it writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine

from cloudassist.server.store import schema
from cloudassist.server.store.engine import make_engine

P = ParamSpec("P")
T = TypeVar("T")


# A read handed to the reader threads: the loop and the future to settle, what to run with a
# connection.
_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[Connection], Any]]


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _given_back(conn: Connection | None) -> None:
    """Returns a kept connection to the pool; a broken one is discarded there (a reader
    thread must outlive any error, or the reads queued behind it would wait forever)."""
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


class _Readers:
    """Threads that run reads and settle the waiting coroutine's future themselves: a read is
    on the path of every Describe call, and a ThreadPoolExecutor's hop (its own future and
    lock, chained to an asyncio future) took 1.4 to 1.6 times this one's CPU.

    A read goes to the thread that went idle last, whose caches still hold the previous
    read's code and data: reads one after another run on one warm thread rather than on each
    thread in turn, and more threads start, up to `count`, only while reads overlap.

    On SQLite each thread keeps its connection from one read to the next (a checkout from the
    pool and its return cost as much as a small query); on PostgreSQL each read checks one
    out, pinged first, since the server may have dropped it meanwhile."""

    def __init__(self, engine: Engine, count: int) -> None:
        self._engine = engine
        self._keep = engine.dialect.name == "sqlite"
        self._count = count
        self._lock = threading.Lock()
        # The inboxes of the threads waiting for a read, the one idle the shortest last.
        self._idle: list[SimpleQueue[_Job | None]] = []
        # Reads submitted while every thread was busy: the next to finish takes them.
        self._backlog: deque[_Job] = deque()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[[Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job: _Job = (loop, future, fn)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new reads after the database closed")
            if self._idle:
                self._idle.pop().put(job)
            elif len(self._threads) < self._count:
                inbox: SimpleQueue[_Job | None] = SimpleQueue()
                inbox.put(job)
                thread = threading.Thread(
                    target=self._work,
                    args=(inbox,),
                    name=f"db-read_{len(self._threads)}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
            else:
                self._backlog.append(job)
        return future

    def _next(self, inbox: SimpleQueue[_Job | None]) -> _Job | None:
        """A read waiting in the backlog for this thread; else None, and its next read (or
        None, once the database has closed) comes to its inbox."""
        with self._lock:
            if self._backlog:
                return self._backlog.popleft()
            if not self._closed:
                self._idle.append(inbox)
            else:
                inbox.put(None)
        return None

    def _work(self, inbox: SimpleQueue[_Job | None]) -> None:
        kept: Connection | None = None
        try:
            job = inbox.get()
            while job is not None:
                loop, future, fn = job
                result: object = None
                error: BaseException | None = None
                try:
                    if future.cancelled():  # not run, as an executor's cancelled job
                        pass
                    elif not self._keep:
                        with self._engine.connect() as conn:
                            result = fn(conn)
                    else:
                        if kept is None:
                            kept = self._engine.connect()
                        result = fn(kept)
                        kept.rollback()  # what the pool does to a connection given back
                except BaseException as exc:  # handed to the caller, as an executor does
                    error = exc
                    _given_back(kept)  # whatever state the error left it in
                    kept = None
                # Idle before the caller learns the result, so that the caller's next read
                # finds this thread, warm, rather than another.
                job = self._next(inbox)
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for it
                    loop.call_soon_threadsafe(_settle, future, result, error)
                if job is None:
                    job = inbox.get()
        finally:
            _given_back(kept)

    def shutdown(self) -> None:
        """Runs the reads already submitted, then ends the threads."""
        with self._lock:
            self._closed = True
            for inbox in self._idle:
                inbox.put(None)
            self._idle.clear()
            threads = list(self._threads)
        for thread in threads:  # outside the lock: a busy thread takes it to finish
            thread.join()
        self._threads.clear()


class Database:
    def __init__(self, engine: Engine, *, read_threads: int = 4) -> None:
        self.engine = engine
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-write")
        self._readers = _Readers(engine, read_threads)
        # Transactions begun, by kind (counted on the event loop, read by the metrics).
        self.transactions = {"write": 0, "read": 0}

    @classmethod
    def open(cls, url: str) -> Database:
        """Opens the database at `url`; a new one gets the schema, an outdated one raises
        `schema.SchemaError` (it is upgraded by `cloudassist-server migrate` only)."""
        engine = make_engine(url)
        try:
            schema.prepare(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def _in_transaction(
        self, fn: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]
    ) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args, **kwargs)

    def _rolled_back(
        self, fn: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]
    ) -> T:
        with self.engine.connect() as conn:
            transaction = conn.begin()
            try:
                return fn(conn, *args, **kwargs)
            finally:
                transaction.rollback()

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Runs `fn(conn, ...)` in one transaction on the writer thread."""
        self.transactions["write"] += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._in_transaction, fn, args, kwargs)

    async def rehearse(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Runs `fn(conn, ...)` on the writer thread as `write` would, then rolls it back: every
        check it makes holds, nothing it writes stays (dry runs)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._rolled_back, fn, args, kwargs)

    async def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Runs `fn(conn, ...)` on a reader thread."""
        self.transactions["read"] += 1
        return await self._readers.submit(lambda conn: fn(conn, *args, **kwargs))

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown()
        self.engine.dispose()
