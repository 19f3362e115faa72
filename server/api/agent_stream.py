"""One agent's Connect stream once its hello is accepted: a reader task hands the agent's
messages to the agent plane, and the handler's own coroutine writes what the hub queues."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from cloudassist.common.clock import now_ms
from cloudassist.common.logs import about
from cloudassist.server.api import agent_wire
from cloudassist.server.api.errors import abort_with
from cloudassist.server.domain.errors import DomainError
from cloudassist.server.domain.tasks import Task
from cloudassist.server.fleet.hub import AgentSession
from cloudassist.server.metrics import Metrics
from cloudassist.server.planes.agents import AgentPlane
from cloudassist.v1 import agent_pb2 as pb

log = logging.getLogger(__name__)
Context = aio.ServicerContext[Any, Any]


def _log_dispatched(task: Task, instance_id: str) -> None:
    log.info(
        "task dispatched",
        extra=about(
            invoke_id=task.invoke_id,
            instance_id=instance_id,
            record_id=task.task_id,
            command_id=task.command_id,
        ),
    )


class AgentStream:
    def __init__(
        self, plane: AgentPlane, metrics: Metrics, session: AgentSession, context: Context
    ) -> None:
        self._plane = plane
        self._metrics = metrics
        self._session = session
        self._context = context

    async def serve(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], welcome: pb.Welcome
    ) -> None:
        """Sends the welcome, then carries the stream both ways until either side ends it; the
        session is closed and the agent disconnected whatever ends it."""
        session = self._session
        reader = asyncio.create_task(self._read(request_iterator))
        try:
            await self._context.write(pb.ConnectResponse(welcome=welcome))
            self._metrics.agent_message("out", "welcome")
            await self._write()
            if session.error is not None:
                log.warning(
                    "agent sent a bad message: %s",
                    session.error,
                    extra=about(instance_id=session.instance_id),
                )
                await abort_with(self._context, session.error)
        finally:
            session.close()
            reader.cancel()
            # Shielded: a second cancellation of this handler must not skip the bookkeeping.
            await asyncio.shield(self._disconnect(reader))

    async def _disconnect(self, reader: asyncio.Task[None]) -> None:
        # Bounded: a reader stuck in a dying call must not keep the instance "online".
        await asyncio.wait({reader}, timeout=1.0)
        await self._plane.disconnect(self._session)
        log.info("agent disconnected", extra=about(instance_id=self._session.instance_id))

    async def _write(self) -> None:
        """Sends what the hub queues for the agent: protocol 1 one message per item; protocol 2
        everything queued at once, packed into as few messages as keep its meaning."""
        session = self._session
        loop = asyncio.get_running_loop()
        while True:
            item = await session.queue.get()
            if item is None:
                return
            items = [item]
            closing = False
            if session.protocol >= 2:
                while not session.queue.empty():
                    more = session.queue.get_nowait()
                    if more is None:
                        closing = True
                        break
                    items.append(more)
            tasks = [i for i in items if isinstance(i, Task)]
            # Before the write: the agent's acceptance can be read before this coroutine
            # resumes after it, and must find the time it is measured from.
            for task in tasks:
                session.dispatched_at[task.task_id] = loop.time()
            messages = (
                agent_wire.batched(items)
                if session.protocol >= 2
                else map(agent_wire.outgoing_to, items)
            )
            for message in messages:
                await self._context.write(message)
                self._metrics.agent_message("out", message.WhichOneof("message") or "")
            session.last_activity = loop.time()
            for task in tasks:
                _log_dispatched(task, session.instance_id)
            if closing:
                return

    async def _read(self, request_iterator: AsyncIterator[pb.ConnectRequest]) -> None:
        session = self._session
        instance_id = session.instance_id
        loop = asyncio.get_running_loop()
        try:
            async for message in request_iterator:
                session.last_activity = loop.time()
                self._handle(message)
        except asyncio.CancelledError:
            raise
        except DomainError as error:
            session.error = error
        except Exception as exc:  # the stream broke: the agent reconnects and resumes
            log.info("agent stream ended: %s", exc, extra=about(instance_id=instance_id))
        finally:
            session.close()

    def _handle(self, message: pb.ConnectRequest) -> None:
        session = self._session
        instance_id = session.instance_id
        kind = message.WhichOneof("message")
        self._metrics.agent_message("in", kind or "")
        now = now_ms()
        if kind == "heartbeat":
            self._plane.heartbeat(instance_id, now)
            return
        decoded = agent_wire.decode(message, kind, instance_id, now)
        if not decoded.reports and not decoded.ignored:
            if kind not in agent_wire.REPORT_KINDS:
                log.warning("agent %s sent an unexpected %s message", instance_id, kind)
            return
        for accepted in decoded.accepted:
            sent_at = session.dispatched_at.pop(accepted.task_id, None)
            if sent_at is not None:
                self._metrics.dispatch_seconds.observe(
                    max(0.0, session.last_activity - sent_at - accepted.held_seconds)
                )
        for reason in decoded.ignored or ():
            log.warning("agent %s: ignored %s", instance_id, reason)
        if decoded.output_bytes:
            self._metrics.output_bytes.inc(decoded.output_bytes)
        self._plane.report_all(decoded.reports)
