"""Signals between servers that share a PostgreSQL database: LISTEN/NOTIFY carrying ids only.

The rows are the truth; a notification only says where to look again:
  dispatch  instance ids with new PENDING records (the server holding the agent sends them)
  cancel    (instance id, record id, timeout) to send to an agent
  changed   invocation ids whose watchers should look again
  revoked   API key ids revoked (sent by the revoking transaction itself, on its commit), which
            every server drops from its cache of checked keys
After the listening connection is lost and restored, every server re-scans (`on_resync`),
since notifications sent meanwhile are gone; `epoch` tells the key cache whether it can rely
on hearing of revocations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from cloudassist.server.domain.reports import CancelOrder
from cloudassist.server.store.security import KEY_REVOKED_CHANNEL

log = logging.getLogger(__name__)

CHANNELS = ("ca_dispatch", "ca_cancel", "ca_changed", KEY_REVOKED_CHANNEL)
# PostgreSQL's payload limit is 8000 bytes; stay well under it.
MAX_PAYLOAD = 7000


class Bus(Protocol):
    async def start(self) -> None: ...

    def epoch(self) -> int | None: ...

    async def stop(self) -> None: ...

    def publish(
        self,
        dispatch: Iterable[str],
        cancels: Iterable[CancelOrder],
        changed: Iterable[str],
    ) -> None: ...


class LocalBus:
    """One server (SQLite): everything is local, nothing to tell."""

    async def start(self) -> None:
        return None

    def epoch(self) -> int | None:
        """Always heard: revocations happen on this server."""
        return 0

    async def stop(self) -> None:
        return None

    def publish(
        self,
        dispatch: Iterable[str],
        cancels: Iterable[CancelOrder],
        changed: Iterable[str],
    ) -> None:
        return None


def _chunks(server_id: str, items: list[Any]) -> list[str]:
    """JSON payloads {"s": sender, "i": [...]} that each fit a notification."""
    payloads: list[str] = []
    batch: list[Any] = []
    size = 0
    for item in items:
        encoded = len(json.dumps(item)) + 1
        if batch and size + encoded > MAX_PAYLOAD:
            payloads.append(json.dumps({"s": server_id, "i": batch}))
            batch, size = [], 0
        batch.append(item)
        size += encoded
    if batch:
        payloads.append(json.dumps({"s": server_id, "i": batch}))
    return payloads


class PostgresBus:
    def __init__(
        self,
        dsn: str,
        server_id: str,
        *,
        on_dispatch: Callable[[list[str]], Awaitable[None]],
        on_cancel: Callable[[list[CancelOrder]], None],
        on_changed: Callable[[list[str]], None],
        on_resync: Callable[[], Awaitable[None]],
        on_revoked: Callable[[list[str]], None] = lambda key_ids: None,
    ) -> None:
        self._dsn = dsn
        self._server_id = server_id
        self._on_dispatch = on_dispatch
        self._on_cancel = on_cancel
        self._on_changed = on_changed
        self._on_resync = on_resync
        self._on_revoked = on_revoked
        # Counts the LISTENs; None while not listening.
        self._listens = 0
        self._epoch: int | None = None
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="bus-listen"),
            asyncio.create_task(self._send(), name="bus-send"),
        ]
        # Do not serve before the first LISTEN, or early notifications would be missed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 10)

    def epoch(self) -> int | None:
        """None while not listening (notifications may be missed), else a number that changes
        each time listening starts again."""
        return self._epoch

    async def stop(self) -> None:
        self._epoch = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def publish(
        self,
        dispatch: Iterable[str],
        cancels: Iterable[CancelOrder],
        changed: Iterable[str],
    ) -> None:
        for channel, items in (
            ("ca_dispatch", sorted(set(dispatch))),
            ("ca_cancel", [[c.instance_id, c.record_id, c.timeout] for c in cancels]),
            ("ca_changed", sorted(set(changed))),
        ):
            for payload in _chunks(self._server_id, items):
                self._outbox.put_nowait((channel, payload))

    async def _connect(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)

    async def _send(self) -> None:
        connection = None
        while True:
            channel, payload = await self._outbox.get()
            while True:
                try:
                    if connection is None or connection.closed:
                        connection = await self._connect()
                    await connection.execute("SELECT pg_notify(%s, %s)", (channel, payload))
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("notify failed (%s); retrying", exc)
                    connection = None
                    await asyncio.sleep(1)

    async def _listen(self) -> None:
        first = True
        while True:
            self._epoch = None
            try:
                connection = await self._connect()
                async with connection:
                    for channel in CHANNELS:
                        await connection.execute(f"LISTEN {channel}")
                    self._listens += 1
                    self._epoch = self._listens
                    self._listening.set()
                    if not first:
                        log.info("listening again; re-scanning for missed changes")
                        await self._on_resync()
                    first = False
                    async for notice in connection.notifies():
                        await self._deliver(notice.channel, notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._epoch = None
                log.warning("lost the notification connection (%s); reconnecting", exc)
                first = False
                await asyncio.sleep(1)

    async def _deliver(self, channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if message.get("s") == self._server_id:
            return  # handled locally when it was published
        items = message.get("i", [])
        try:
            if channel == "ca_dispatch":
                await self._on_dispatch([str(i) for i in items])
            elif channel == "ca_cancel":
                self._on_cancel([CancelOrder(str(i), str(r), bool(t)) for i, r, t in items])
            elif channel == "ca_changed":
                self._on_changed([str(i) for i in items])
            elif channel == KEY_REVOKED_CHANNEL:
                self._on_revoked([str(i) for i in items])
        except Exception:
            log.exception("handling a %s notification failed", channel)
