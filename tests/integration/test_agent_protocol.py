"""The agent stream's protocols, on the wire: what one quick record costs with a real agent
(protocol 2), and an agent of protocol 1 (the message flow of earlier agents) served by this
server as before."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import agent_pb2, agent_pb2_grpc, command_pb2_grpc, instance_pb2
from cloudassist.v1 import command_pb2 as pb
from tests.integration.conftest import Cluster
from tests.integration.helpers import REGION, read_output, results, run
from tests.support import AgentProcess

CONNECT = "/cloudassist.v1.AgentService/Connect"
REGISTER = "/cloudassist.v1.AgentService/Register"
# How long a step of the agent stream may take before the test gives up waiting for it.
STEP_SECONDS = 30.0


@dataclass
class WireMessage:
    direction: str  # "up" (agent to server) or "down"
    message: agent_pb2.ConnectRequest | agent_pb2.ConnectResponse

    @property
    def kind(self) -> str:
        return self.message.WhichOneof("message") or ""


@dataclass
class CountingProxy:
    """A gRPC proxy between an agent and the server that passes the agent stream's messages
    through unchanged (as bytes) and keeps each one, decoded; with `rewrite`, the server's
    messages pass through that function first (a server with a bug, played by the test)."""

    upstream: str
    rewrite: Callable[[bytes], bytes] | None = None
    seen: list[WireMessage] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def serve(self) -> AsyncIterator[None]:
        channel = aio.insecure_channel(self.upstream)
        server = aio.server()
        handlers = {
            "Connect": grpc.stream_stream_rpc_method_handler(self._connect(channel)),
            "Register": grpc.unary_unary_rpc_method_handler(self._register(channel)),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("cloudassist.v1.AgentService", handlers),)
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            yield
        finally:
            await server.stop(None)
            await channel.close()

    def _keep(self, direction: str, raw: bytes) -> None:
        kind = agent_pb2.ConnectRequest if direction == "up" else agent_pb2.ConnectResponse
        self.seen.append(WireMessage(direction, kind.FromString(raw)))
        self.changed.set()

    def _register(self, channel: aio.Channel) -> object:
        async def register(raw: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
            answer: bytes = await channel.unary_unary(REGISTER)(raw)
            return answer

        return register

    def _connect(self, channel: aio.Channel) -> object:
        async def connect(
            requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
        ) -> AsyncIterator[bytes]:
            call = channel.stream_stream(CONNECT)()

            async def up() -> None:
                async for raw in requests:
                    self._keep("up", raw)
                    await call.write(raw)
                await call.done_writing()

            forward = asyncio.create_task(up())
            try:
                async for raw in call:
                    if self.rewrite is not None:
                        raw = self.rewrite(raw)
                    self._keep("down", raw)
                    yield raw
            finally:
                forward.cancel()
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await forward

        return connect

    async def wait_for(self, what: str, found: object) -> WireMessage:
        """The first message kept so far, or from now on, that `found` accepts."""
        checked = 0
        deadline = asyncio.get_running_loop().time() + STEP_SECONDS
        while True:
            for message in self.seen[checked:]:
                if found(message):  # type: ignore[operator]
                    return message
            checked = len(self.seen)
            self.changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no {what} on the agent stream; seen: {self.kinds()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def kinds(self) -> list[str]:
        return [f"{m.direction}:{m.kind}" for m in self.seen]


def _stores_result_of(record_id: str, message: WireMessage) -> bool:
    if message.direction != "down":
        return False
    response = message.message
    assert isinstance(response, agent_pb2.ConnectResponse)
    acks = list(response.orders.acks) if response.HasField("orders") else [response.ack]
    return any(a.task_id == record_id and a.result_stored for a in acks)


async def test_a_quick_record_costs_at_most_four_messages_on_the_wire(
    cluster: Cluster, stub: command_pb2_grpc.CommandServiceStub, tmp_path: Path
) -> None:
    proxy = CountingProxy(cluster.server.agent_address)
    serving = proxy.serve()
    await anext(serving)
    agent = AgentProcess(cluster.server, "i-wire", tmp_path)
    agent.via = f"127.0.0.1:{proxy.port}"
    try:
        await asyncio.to_thread(agent.start)
        welcome = await proxy.wait_for("welcome", lambda m: m.kind == "welcome")
        assert isinstance(welcome.message, agent_pb2.ConnectResponse)
        assert welcome.message.welcome.protocol_version == 2
        before = len(proxy.seen)

        invoke_id = await run(stub, "echo hi", ["i-wire"])
        record_id = (await results(stub, invoke_id))["i-wire"].record_id
        await proxy.wait_for(
            "the ack of the record's result", lambda m: _stores_result_of(record_id, m)
        )
        result = (await results(stub, invoke_id))["i-wire"]
        assert result.state == pb.EXECUTION_STATE_SUCCESS
        assert result.exit_code == 0
        output, _ = await read_output(stub, invoke_id, "i-wire")
        assert output == b"hi\n"

        # Heartbeats fill silences of the stream; they belong to no record.
        messages = [m for m in proxy.seen[before:] if m.kind != "heartbeat"]
        kinds = [f"{m.direction}:{m.kind}" for m in messages]
        assert len(messages) <= 4, kinds
        reports = [m.message for m in messages if m.kind == "reports"]
        assert len(reports) == 1, f"acceptance, output and exit in one report: {kinds}"
        (report,) = reports[0].reports.tasks  # type: ignore[union-attr]
        assert report.task_id == record_id
        assert report.HasField("accepted_time")
        assert report.data == b"hi\n"
        assert report.finished.exit_code == 0
    finally:
        await asyncio.to_thread(agent.stop)
        with contextlib.suppress(StopAsyncIteration):
            await anext(serving)


# Protocol 1 ----------------------------------------------------------------------------


@dataclass
class OldAgent:
    """An agent of protocol 1, played by the test: its hello says no protocol, it sends
    task_accepted, output and task_finished | task_stopped one message each, and it knows
    only dispatch, cancel, ack and heartbeat."""

    call: aio.StreamStreamCall[agent_pb2.ConnectRequest, agent_pb2.ConnectResponse]
    received: asyncio.Queue[agent_pb2.ConnectResponse]
    reader: asyncio.Task[None]

    async def next(self) -> agent_pb2.ConnectResponse:
        """The next message other than a heartbeat; every one is of protocol 1."""
        while True:
            message = await asyncio.wait_for(self.received.get(), STEP_SECONDS)
            kind = message.WhichOneof("message")
            assert kind in {"welcome", "dispatch", "cancel", "ack", "heartbeat"}, kind
            if kind != "heartbeat":
                return message

    async def send(self, **message: object) -> None:
        await self.call.write(agent_pb2.ConnectRequest(**message))  # type: ignore[arg-type]

    async def ack_of(self, task_id: str) -> agent_pb2.Ack:
        while True:
            message = await self.next()
            if message.HasField("ack") and message.ack.task_id == task_id:
                return message.ack


@contextlib.asynccontextmanager
async def old_agent(cluster: Cluster, instance_id: str) -> AsyncIterator[OldAgent]:
    server = cluster.server
    activation_id, code = server.activation()
    async with aio.insecure_channel(server.agent_address) as channel:
        agents = agent_pb2_grpc.AgentServiceStub(channel)
        registered = await agents.Register(
            agent_pb2.RegisterRequest(
                activation_id=activation_id,
                activation_code=code,
                instance_id=instance_id,
                os_type=instance_pb2.OS_TYPE_LINUX,
                hostname="old-agent",
            )
        )
        call = agents.Connect()
        received: asyncio.Queue[agent_pb2.ConnectResponse] = asyncio.Queue()

        async def read() -> None:
            async for message in call:
                received.put_nowait(message)

        agent = OldAgent(call, received, asyncio.create_task(read()))
        try:
            await agent.send(
                hello=agent_pb2.Hello(
                    instance_id=registered.instance_id,
                    instance_secret=registered.instance_secret,
                    region_id=REGION,
                    os_type=instance_pb2.OS_TYPE_LINUX,
                    hostname="old-agent",
                    agent_version="0.1.0",
                )
            )
            welcome = await agent.next()
            assert welcome.HasField("welcome")
            yield agent
        finally:
            call.cancel()
            agent.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                await agent.reader


def _ts(ms: int) -> agent_pb2.TaskAccepted:
    accepted = agent_pb2.TaskAccepted()
    accepted.start_time.FromMilliseconds(ms)
    return accepted


async def test_an_agent_of_protocol_1_runs_and_stops_tasks_as_before(
    cluster: Cluster, stub: command_pb2_grpc.CommandServiceStub
) -> None:
    async with old_agent(cluster, "i-old") as agent:
        invoke_id = await run(stub, "echo old", ["i-old"])
        dispatched = await agent.next()
        assert dispatched.HasField("dispatch"), dispatched
        task = dispatched.dispatch
        assert task.script == b"echo old"
        task_id = task.task_id

        accepted = _ts(1_700_000_000_000)
        accepted.task_id = task_id
        await agent.send(task_accepted=accepted)
        await agent.send(output=agent_pb2.TaskOutput(task_id=task_id, offset=0, data=b"old\n"))
        await agent.send(
            task_finished=agent_pb2.TaskFinished(task_id=task_id, exit_code=0, output_size=4)
        )
        ack = await agent.ack_of(task_id)
        while not ack.result_stored:
            ack = await agent.ack_of(task_id)
        assert ack.offset == 4

        result = (await results(stub, invoke_id))["i-old"]
        assert result.state == pb.EXECUTION_STATE_SUCCESS
        assert result.exit_code == 0
        output, _ = await read_output(stub, invoke_id, "i-old")
        assert output == b"old\n"

        # A stop reaches it as a cancel; its task_stopped ends the record.
        invoke_id = await run(stub, "sleep 600", ["i-old"])
        dispatched = await agent.next()
        task_id = dispatched.dispatch.task_id
        accepted = _ts(1_700_000_000_000)
        accepted.task_id = task_id
        await agent.send(task_accepted=accepted)
        await _until_running(stub, invoke_id)
        await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
        cancel = await agent.next()
        assert cancel.HasField("cancel"), cancel
        assert cancel.cancel.task_id == task_id
        await agent.send(
            task_stopped=agent_pb2.TaskStopped(
                task_id=task_id, reason=agent_pb2.STOP_REASON_STOP, started=True, exit_code=143
            )
        )
        while not (await agent.ack_of(task_id)).result_stored:
            pass
        result = (await results(stub, invoke_id))["i-old"]
        assert result.state == pb.EXECUTION_STATE_TERMINATED


async def _until_running(stub: command_pb2_grpc.CommandServiceStub, invoke_id: str) -> None:
    async for event in stub.WatchInvocation(
        pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id)
    ):
        if event.HasField("state_change") and (
            event.state_change.state == pb.EXECUTION_STATE_RUNNING
        ):
            return
    pytest.fail("the invocation ended before it ran")
