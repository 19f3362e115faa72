"""AgentService.Connect: one reader task for the agent's messages, the handler writes ours."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from cloudassist.v1 import agent_pb2 as pb
from cloudassist.v1 import agent_pb2_grpc
from server.agent_plane import AgentPlane
from server.api import convert
from server.api.errors import abort_with, unary_errors
from server.clock import now_ms
from server.domain import reasons
from server.domain.errors import DomainError, InvalidArgument, Unauthenticated
from server.domain.limits import Limits
from server.domain.model import OsType
from server.domain.tags import check_tags
from server.domain.tasks import EndKind, Task, TaskEnd
from server.domain.validation import check_instance_id
from server.hub import AgentSession, Beat, Outgoing
from server.logs import about
from server.metrics import Metrics
from server.store.agents import AgentIdentity, HeldTask
from server.store.reports import CancelOrder, OutputAck, OutputAppend, TaskStart

log = logging.getLogger(__name__)
Context = aio.ServicerContext[Any, Any]


def _ms(ts: Timestamp, default: int) -> int:
    """An agent's time, or `default` when it sent none (or one out of range)."""
    if not (ts.seconds or ts.nanos):
        return default
    try:
        return ts.ToMilliseconds()
    except (ValueError, OverflowError):
        return default


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


def _file_push(task: Task) -> pb.FilePush | None:
    file = task.file
    if file is None:
        return None
    return pb.FilePush(
        name=file.name,
        target_dir=file.target_dir,
        mode=file.mode,
        owner=file.owner,
        group=file.group,
        overwrite=file.overwrite,
    )


def outgoing_to(item: Outgoing) -> pb.ConnectResponse:
    if isinstance(item, Task):
        return pb.ConnectResponse(
            dispatch=pb.Dispatch(
                task_id=item.task_id,
                invoke_id=item.invoke_id,
                command_id=item.command_id,
                command_type=convert.command_type_to(item.command_type),
                script=item.script,
                timeout_seconds=item.timeout_seconds,
                working_dir=item.working_dir,
                username=item.username,
                output_limit=item.output_limit,
                env=item.env,
                launcher=item.launcher,
                file=_file_push(item),
            )
        )
    if isinstance(item, CancelOrder):
        reason = pb.STOP_REASON_TIMEOUT if item.timeout else pb.STOP_REASON_STOP
        return pb.ConnectResponse(cancel=pb.Cancel(task_id=item.record_id, reason=reason))
    if isinstance(item, OutputAck):
        return pb.ConnectResponse(
            ack=pb.Ack(
                task_id=item.record_id,
                offset=item.offset,
                result_stored=item.result_stored,
                rewind=item.rewind,
            )
        )
    if isinstance(item, Beat):
        beat = pb.Heartbeat()
        beat.time.FromMilliseconds(now_ms())
        return pb.ConnectResponse(heartbeat=beat)
    return pb.ConnectResponse(reconnect=pb.Reconnect(reason=item.reason))


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
            session, acks = await self._plane.connect(identity, held)
        except DomainError as error:
            log.warning("agent %r refused: %s", first.hello.instance_id[:128], error.message)
            await abort_with(context, error)
        log.info(
            "agent connected (%d tasks held)",
            len(held),
            extra=about(instance_id=identity.instance_id),
        )
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:
            await context.write(
                pb.ConnectResponse(
                    welcome=pb.Welcome(
                        heartbeat_interval_seconds=self._heartbeat,
                        acks=[pb.TaskAck(task_id=t, offset=o, result_stored=s) for t, o, s in acks],
                    )
                )
            )
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
        loop = asyncio.get_running_loop()
        while True:
            item = await session.queue.get()
            if item is None:
                return
            if isinstance(item, Task):
                # Before the write: the agent's acceptance can be read before this coroutine
                # resumes after it, and must find the time it is measured from.
                session.dispatched_at[item.task_id] = loop.time()
            await context.write(outgoing_to(item))
            session.last_activity = loop.time()
            if isinstance(item, Task):
                log.info(
                    "task dispatched",
                    extra=about(
                        invoke_id=item.invoke_id,
                        instance_id=session.instance_id,
                        record_id=item.task_id,
                        command_id=item.command_id,
                    ),
                )

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
        now = now_ms()
        if kind == "heartbeat":
            self._plane.heartbeat(instance_id, now)
        elif kind == "task_accepted":
            m = message.task_accepted
            sent_at = session.dispatched_at.pop(m.task_id, None)
            if sent_at is not None:
                self._metrics.dispatch_seconds.observe(session.last_activity - sent_at)
            self._plane.report(TaskStart(m.task_id, instance_id, _ms(m.start_time, now)))
        elif kind == "output":
            out = message.output
            if out.offset < 0:
                log.warning("agent %s sent output at a negative offset", instance_id)
                return
            self._metrics.output_bytes.inc(len(out.data))
            self._plane.report(OutputAppend(out.task_id, instance_id, out.offset, out.data))
        elif kind == "task_finished":
            f = message.task_finished
            self._plane.report(
                TaskEnd(
                    f.task_id,
                    instance_id,
                    EndKind.FINISHED,
                    f.exit_code,
                    max(0, f.output_size),
                    _ms(f.finish_time, now),
                    start_ms=_ms(f.start_time, now),
                )
            )
        elif kind == "task_stopped":
            s = message.task_stopped
            end_kind = EndKind.TIMED_OUT if s.reason == pb.STOP_REASON_TIMEOUT else EndKind.STOPPED
            self._plane.report(
                TaskEnd(
                    s.task_id,
                    instance_id,
                    end_kind,
                    s.exit_code if s.started else None,
                    max(0, s.output_size),
                    _ms(s.stop_time, now),
                    started=s.started,
                )
            )
        elif kind == "task_error":
            e = message.task_error
            self._plane.report(
                TaskEnd(
                    e.task_id,
                    instance_id,
                    EndKind.ERROR,
                    None,
                    max(0, e.output_size),
                    now,
                    started=False,
                    error_code=e.error_code[:64],
                    error_info=e.error_info[:1024],
                )
            )
        else:
            log.warning("agent %s sent an unexpected %s message", instance_id, kind)
