"""AgentService: Register, and Connect up to the welcome (the stream itself runs in
agent_stream.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from cloudassist.common.logs import about
from cloudassist.server.api import agent_wire, convert
from cloudassist.server.api.agent_stream import AgentStream
from cloudassist.server.api.errors import abort_with, unary_errors
from cloudassist.server.domain import reasons
from cloudassist.server.domain.admission import Admission
from cloudassist.server.domain.agents import AgentIdentity, HeldTask
from cloudassist.server.domain.errors import (
    DomainError,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
)
from cloudassist.server.domain.fields import check_instance_id
from cloudassist.server.domain.limits import Limits
from cloudassist.server.domain.model import OsType
from cloudassist.server.domain.tags import check_tags
from cloudassist.server.metrics import Metrics
from cloudassist.server.planes.agents import AgentPlane
from cloudassist.v1 import agent_pb2 as pb
from cloudassist.v1 import agent_pb2_grpc

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
        self._admission = Admission(limits.agent_connects_per_second)
        # Admitted hellos wait in line for one of these.
        self._storing = asyncio.Semaphore(limits.agent_connects_in_flight)

    def _admit(self) -> None:
        """ResourceExhausted, with when to come back (google.rpc.RetryInfo), for a hello beyond
        what the server admits now: refused before any work, so a storm costs little."""
        wait = self._admission.admit(asyncio.get_running_loop().time())
        if wait is not None:
            self._metrics.agent_message("in", "hello_refused")
            raise ResourceExhausted(
                reasons.AGENTS_THROTTLED,
                f"the server is admitting agents at its pace; retry in {wait:.1f} s",
                retry_after_seconds=wait,
            )

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
            # After the hello is read: a status sent while the agent is still writing it can
            # reach the agent as INTERNAL, without the time to come back.
            self._admit()
        except DomainError as error:
            await abort_with(context, error)
        try:
            identity = _identity(first.hello, self._limits)
            self._check_certificate(context, identity.instance_id)
            protocol = agent_wire.negotiate(first.hello.protocol_version)
            async with self._storing:
                session, acks = await self._plane.connect(identity, held, protocol)
        except DomainError as error:
            log.warning("agent %r refused: %s", first.hello.instance_id[:128], error.message)
            await abort_with(context, error)
        finally:
            self._admission.done(asyncio.get_running_loop().time())
        log.info(
            "agent connected (%d tasks held)",
            len(held),
            extra=about(instance_id=identity.instance_id),
        )
        self._metrics.agent_message("in", "hello")
        welcome = pb.Welcome(
            heartbeat_interval_seconds=self._heartbeat,
            acks=[pb.TaskAck(task_id=t, offset=o, result_stored=s) for t, o, s in acks],
            # An agent of protocol 1 leaves the field alone.
            protocol_version=protocol,
        )
        stream = AgentStream(self._plane, self._metrics, session, context)
        await stream.serve(request_iterator, welcome)
