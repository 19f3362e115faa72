"""AgentService.Connect: one reader task for the agent's messages, the handler writes ours."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from cloudassist.v1 import agent_pb2 as pb
from cloudassist.v1 import agent_pb2_grpc
from server.agent_plane import AgentPlane
from server.api import agent_wire, convert
from server.api.errors import abort_with, unary_errors
from server.clock import now_ms
from server.domain import reasons
from server.domain.errors import DomainError, InvalidArgument, Unauthenticated
from server.domain.limits import Limits
from server.domain.model import OsType
from server.domain.tags import check_tags
from server.domain.tasks import Task
from server.domain.validation import check_instance_id
from server.hub import AgentSession
from server.logs import about
from server.metrics import Metrics
from server.store.agents import AgentIdentity, HeldTask

log = logging.getLogger(__name__)
Context = aio.ServicerContext[Any, Any]


def _os_type(value: int, field: str) -> OsType:
    os_type = convert.os_type_from(value)
    if os_type is None:
        raise InvalidArgument(reasons.INVALID_FILTER, f"{field}: LINUX or WINDOWS", field=field)
    return os_type


def _identity(hello: pb.Hello, limits: Limits) -> AgentIdentity:
    check_instance_id(hello.instance_id, limits, field="hello.instance_id")
    return AgentIdentity(
        instance_id=hello.instance_id,
        secret=hello.instance_secret,
        os_type=_os_type(hello.os_type, "hello.os_type"),
        hostname=hello.hostname[:255],
        agent_version=hello.agent_version[:64],
        tags=check_tags(((t.key, t.value) for t in hello.tags), "hello.tags"),
        boot_id=hello.boot_id[:64],
        extra_command_types=frozenset(
            t
            for t in (
                convert.command_type_from(v, "hello.extra_command_types")
                for v in hello.extra_command_types
            )
            if t is not None
        ),
    )


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


def certificate_name(context: Context) -> str | None:
    """The common name of the client certificate (mTLS), if the peer presented one."""
    names = context.auth_context().get("x509_common_name")
    return bytes(next(iter(names))).decode() if names else None


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        plane: AgentPlane,
        limits: Limits,
        heartbeat_seconds: int,
        *,
        bind_certificates: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self._plane = plane
        self._metrics = metrics or Metrics()
        self._limits = limits
        self._heartbeat = heartbeat_seconds
        # mTLS: an agent may act only as the instance named in its certificate.
        self._bind_certificates = bind_certificates

    def _check_certificate(self, context: Context, instance_id: str) -> None:
        if not self._bind_certificates:
            return
        name = certificate_name(context)
        if name != instance_id:
            raise Unauthenticated(
                reasons.INVALID_INSTANCE_CREDENTIALS,
                f"instance_id: the client certificate names {name!r}, not {instance_id!r}",
                field="instance_id",
            )

    @unary_errors
    async def Register(self, request: pb.RegisterRequest, context: Context) -> pb.RegisterResponse:
        requested = request.instance_id
        if self._bind_certificates:
            requested = requested or (certificate_name(context) or "")
            self._check_certificate(context, requested)
        if requested:
            check_instance_id(requested, self._limits, field="instance_id")
        instance_id, secret, region_id = await self._plane.register(
            request.activation_id,
            request.activation_code,
            requested,
            _os_type(request.os_type, "os_type"),
            request.hostname,
        )
        return pb.RegisterResponse(
            instance_id=instance_id, instance_secret=secret, region_id=region_id
        )

    async def Connect(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pb.ConnectRequest], context: Context
    ) -> None:
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            return
        except DomainError as error:
            await abort_with(context, error)
        if first.WhichOneof("message") != "hello":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the first message must be hello"
            )
        held = [HeldTask(t.task_id, max(0, t.output_size), t.finished) for t in first.hello.tasks]
        try:
            identity = _identity(first.hello, self._limits)
            self._check_certificate(context, identity.instance_id)
            protocol = agent_wire.negotiate(first.hello.protocol_version)
            session, acks = await self._plane.connect(identity, held, protocol)
        except DomainError as error:
            log.warning("agent %r refused: %s", first.hello.instance_id[:128], error.message)
            await abort_with(context, error)
        log.info(
            "agent connected (%d tasks held)",
            len(held),
            extra=about(instance_id=identity.instance_id),
        )
        self._metrics.agent_message("in", "hello")
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:
            await context.write(
                pb.ConnectResponse(
                    welcome=pb.Welcome(
                        heartbeat_interval_seconds=self._heartbeat,
                        acks=[pb.TaskAck(task_id=t, offset=o, result_stored=s) for t, o, s in acks],
                        # An agent of protocol 1 leaves the field alone.
                        protocol_version=protocol,
                    )
                )
            )
            self._metrics.agent_message("out", "welcome")
            await self._write(session, context)
            if session.error is not None:
                log.warning(
                    "agent sent a bad message: %s",
                    session.error,
                    extra=about(instance_id=session.instance_id),
                )
                await abort_with(context, session.error)
        finally:
            session.close()
            reader.cancel()
            # Shielded: a second cancellation of this handler must not skip the bookkeeping.
            await asyncio.shield(self._disconnect(session, reader))

    async def _disconnect(self, session: AgentSession, reader: asyncio.Task[None]) -> None:
        # Bounded: a reader stuck in a dying call must not keep the instance "online".
        await asyncio.wait({reader}, timeout=1.0)
        await self._plane.disconnect(session)
        log.info("agent disconnected", extra=about(instance_id=session.instance_id))

    async def _write(self, session: AgentSession, context: Context) -> None:
        """Sends what the hub queues for the agent: protocol 1 one message per item; protocol 2
        everything queued at once, packed into as few messages as keep its meaning."""
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
                await context.write(message)
                self._metrics.agent_message("out", message.WhichOneof("message") or "")
            session.last_activity = loop.time()
            for task in tasks:
                _log_dispatched(task, session.instance_id)
            if closing:
                return

    async def _read(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], session: AgentSession
    ) -> None:
        instance_id = session.instance_id
        loop = asyncio.get_running_loop()
        try:
            async for message in request_iterator:
                session.last_activity = loop.time()
                self._handle(session, message)
        except asyncio.CancelledError:
            raise
        except DomainError as error:
            session.error = error
        except Exception as exc:  # the stream broke: the agent reconnects and resumes
            log.info("agent stream ended: %s", exc, extra=about(instance_id=instance_id))
        finally:
            session.close()

    def _handle(self, session: AgentSession, message: pb.ConnectRequest) -> None:
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
