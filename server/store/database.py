"""Runs repository functions off the event loop: one writer thread, a few reader threads.

One writer keeps SQLite free of lock contention and makes quota checks atomic; WAL lets the
readers proceed while it writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine

from cloudassist.server.store import schema
from cloudassist.server.store.engine import make_engine

P = ParamSpec("P")
T = TypeVar("T")


class Database:
    def __init__(self, engine: Engine, *, read_threads: int = 4) -> None:
        self.engine = engine
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="db-write")
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="db-read")
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

    def _read_only(
        self, fn: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]
    ) -> T:
        with self.engine.connect() as conn:
            return fn(conn, *args, **kwargs)

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
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read_only, fn, args, kwargs)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()
