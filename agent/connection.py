"""The agent's side of AgentService: registration, and one Connect stream, resumed.

The stream is opened with a hello (every task the agent holds) and answered with a welcome
(how far the server got with each); then one reader hands the server's orders to the peer,
one writer drains a bounded outbox, the peer's uploader fills it, and heartbeats fill the
silences. When the stream breaks, the next one is opened (on the next of the configured
servers) after a backoff with jitter, or, when the server refused the hello for now
(RESOURCE_EXHAUSTED with google.rpc.RetryInfo), after the time it gave, with jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from cloudassist.agent import wire
from cloudassist.agent.config import AgentConfig
from cloudassist.agent.spool import Credentials
from cloudassist.common.logs import about
from cloudassist.v1 import agent_pb2 as pb
from cloudassist.v1 import agent_pb2_grpc

log = logging.getLogger(__name__)

OUTBOX = 64

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    # The agent reconnects on its own schedule (backoff with jitter below).
    ("grpc.enable_retries", 0),
]

# The longest wait a server's RetryInfo is honoured for (a bad value must not park the agent).
MAX_RETRY_AFTER = 600.0
# A server's wait is stretched by up to this fraction, so that agents told the same time
# (or told the same slot by several servers) do not come back in step.
RETRY_JITTER = 0.2
# Heartbeats go out after a quiet spell drawn from [1 - HEARTBEAT_JITTER, 1] intervals, so
# agents that connected together drift apart instead of beating together forever.
HEARTBEAT_JITTER = 0.2

Outbox = asyncio.Queue[pb.ConnectRequest]
Call = aio.StreamStreamCall[pb.ConnectRequest, pb.ConnectResponse]


class RegistrationError(Exception):
    """The agent cannot register (no activation, or the server refused it)."""


class Peer(Protocol):
    """What a connection serves: the tasks the agent holds."""

    def progress(self) -> list[wire.Progress]:
        """For the hello: every task held."""
        ...

    def welcomed(self, acks: dict[str, wire.Ack]) -> None:
        """A stream is open: how far the server got with each task of the hello."""
        ...

    def apply(self, order: wire.Order) -> None:
        """An order from the server."""
        ...

    async def upload(self, outbox: Outbox, protocol: int) -> None:
        """Fills `outbox` until cancelled (when the stream ends)."""
        ...


@dataclass
class Backoff:
    """Exponential backoff with full jitter, so a fleet does not reconnect in step."""

    cap: float
    base: float = 0.5
    attempts: int = field(default=0)

    def next_delay(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.attempts))
        self.attempts = min(self.attempts + 1, 30)
        return delay

    def reset(self) -> None:
        self.attempts = 0


def retry_after(error: BaseException) -> float | None:
    """The seconds a RESOURCE_EXHAUSTED status asks the agent to wait (its RetryInfo)."""
    if not isinstance(error, aio.AioRpcError):
        return None
    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # not ours to fail on: the agent falls back to its backoff
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                seconds: float = info.retry_delay.ToTimedelta().total_seconds()
                return min(MAX_RETRY_AFTER, max(0.0, seconds))
    return None


class Connection:
    def __init__(
        self,
        config: AgentConfig,
        credentials: Credentials | None,
        save_credentials: Callable[[Credentials], Awaitable[None]],
        peer: Peer,
        *,
        boot_id: str,
        powershell: bool,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self._save_credentials = save_credentials
        self._peer = peer
        self._boot_id = boot_id
        self._powershell = powershell
        # Several servers (comma-separated): the first, then each reconnect tries the next.
        self._servers = [a.strip() for a in config.server.split(",") if a.strip()]
        self._server_index = 0
        # The protocol of the current stream (the welcome says).
        self.protocol = 1
        # Event-loop time of the last message sent (heartbeats only fill silences).
        self._last_sent = 0.0
        self._stopping = asyncio.Event()
        self._call: Call | None = None
        self.connected = asyncio.Event()

    @property
    def instance_id(self) -> str:
        return self.credentials.instance_id if self.credentials else self.config.instance_id

    @property
    def server(self) -> str:
        return self._servers[self._server_index % len(self._servers)]

    def _next_server(self) -> None:
        self._server_index += 1

    def _channel(self) -> aio.Channel:
        config = self.config
        if config.ca is None and config.cert is None:
            return aio.insecure_channel(self.server, options=CHANNEL_OPTIONS)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=config.ca.read_bytes() if config.ca else None,
            private_key=config.key.read_bytes() if config.key else None,
            certificate_chain=config.cert.read_bytes() if config.cert else None,
        )
        return aio.secure_channel(self.server, credentials, options=CHANNEL_OPTIONS)

    async def register(self) -> Credentials:
        """The saved credentials, or new ones from the configured activation."""
        config = self.config
        if self.credentials is not None:
            if config.instance_id and config.instance_id != self.credentials.instance_id:
                log.warning(
                    "the state directory holds instance %s; --instance-id %s is ignored",
                    self.credentials.instance_id,
                    config.instance_id,
                )
            return self.credentials
        if not (config.activation_id and config.activation_code):
            raise RegistrationError(
                "this agent is not registered: give --activation-id and --activation-code "
                "(an admin creates them with `cloudassist activations create`)"
            )
        backoff = Backoff(config.max_backoff_seconds)
        while True:
            try:
                async with self._channel() as channel:
                    response = await agent_pb2_grpc.AgentServiceStub(channel).Register(
                        pb.RegisterRequest(
                            activation_id=config.activation_id,
                            activation_code=config.activation_code,
                            instance_id=config.instance_id,
                            os_type=wire.os_type(),
                            hostname=socket.gethostname(),
                        ),
                        timeout=30,
                    )
                break
            except aio.AioRpcError as error:
                retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if error.code() not in retryable:
                    raise RegistrationError(
                        f"registration refused: {error.code().name}: {error.details()}"
                    ) from error
                log.info("registration: %s; retrying", _brief(error))
                self._next_server()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff.next_delay())
            if self._stopping.is_set():
                raise RegistrationError("stopped before registering")
        if config.region_id and response.region_id != config.region_id:
            log.warning(
                "the activation is for region %s, not %s", response.region_id, config.region_id
            )
        credentials = Credentials(
            response.instance_id, response.instance_secret, response.region_id
        )
        await self._save_credentials(credentials)
        log.info("registered as %s in %s", credentials.instance_id, credentials.region_id)
        self.credentials = credentials
        return credentials

    async def run(self) -> None:
        """Connects, and reconnects whenever the stream ends, until stopped."""
        backoff = Backoff(self.config.max_backoff_seconds)
        while not self._stopping.is_set():
            wait: float | None = None
            try:
                welcomed = await self._session(backoff)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # Only the call was cancelled: by stop(), or by a writer that failed.
                welcomed = False
            except Exception as exc:
                welcomed = False
                wait = retry_after(exc)
                log.info("connection to %s ended: %s", self.server, _brief(exc))
            finally:
                self.connected.clear()
            if self._stopping.is_set():
                break
            self._next_server()
            if wait is not None:
                # The server said when: not before, and spread a little after.
                delay = wait * random.uniform(1, 1 + RETRY_JITTER)
            else:
                delay = random.uniform(0, 1) if welcomed else backoff.next_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def stop(self) -> None:
        self._stopping.set()
        if self._call is not None:
            self._call.cancel()

    def _hello(self) -> pb.Hello:
        assert self.credentials is not None
        return wire.hello(
            self.credentials,
            self.config.tags,
            self._boot_id,
            self._powershell,
            self._peer.progress(),
        )

    async def _session(self, backoff: Backoff) -> bool:
        """One connection, until it breaks or the server asks to reconnect.

        Returns whether the server welcomed the agent (then the next attempt need not wait).
        """
        async with self._channel() as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
            self._call = call
            await call.write(pb.ConnectRequest(hello=self._hello()))
            welcome = wire.welcome_in(await call.read())
            if welcome is None:
                raise ConnectionError("the server did not answer hello with welcome")
            self.protocol = welcome.protocol
            self._peer.welcomed(welcome.acks)
            backoff.reset()
            self.connected.set()
            log.info(
                "connected to %s as %s",
                self.server,
                self.instance_id,
                extra=about(instance_id=self.instance_id),
            )
            outbox: Outbox = asyncio.Queue(OUTBOX)
            helpers = [
                asyncio.create_task(self._writer(call, outbox)),
                asyncio.create_task(self._peer.upload(outbox, self.protocol)),
                asyncio.create_task(self._heartbeats(outbox, welcome.heartbeat_interval)),
            ]
            try:
                while True:
                    message = await call.read()
                    if not isinstance(message, pb.ConnectResponse):  # end of stream
                        return True
                    kind = message.WhichOneof("message")
                    if kind == "reconnect":
                        log.info("server asked to reconnect: %s", message.reconnect.reason)
                        return True
                    for order in wire.orders_in(message, kind):
                        self._peer.apply(order)
            finally:
                for helper in helpers:
                    helper.cancel()
                for helper in helpers:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await helper
                call.cancel()
                self._call = None

    async def _writer(self, call: Call, outbox: Outbox) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await outbox.get()
                self._last_sent = loop.time()
                await call.write(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("sending to the server failed: %s", _brief(exc))
            call.cancel()

    async def _heartbeats(self, outbox: Outbox, interval: int) -> None:
        """A heartbeat whenever nothing else has gone out for `interval` seconds."""
        loop = asyncio.get_running_loop()
        self._last_sent = loop.time()
        quiet = interval * random.uniform(1 - HEARTBEAT_JITTER, 1)
        while True:
            quiet_until = self._last_sent + quiet
            if loop.time() < quiet_until:
                await asyncio.sleep(quiet_until - loop.time())
                continue
            self._last_sent = loop.time()
            quiet = interval * random.uniform(1 - HEARTBEAT_JITTER, 1)
            await outbox.put(wire.heartbeat())


def _brief(exc: BaseException) -> str:
    if isinstance(exc, aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
