"""Agent admission: a burst of hellos beyond what the server admits is told when to come back
(RESOURCE_EXHAUSTED with google.rpc.RetryInfo), never refused by the transport (INTERNAL);
agents that honour the time all end connected, the real agent included."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from pathlib import Path

import grpc
import pytest
from grpc import aio

from cloudassist.agent import wire
from cloudassist.agent.config import AgentConfig
from cloudassist.agent.connection import Connection, Outbox, retry_after
from cloudassist.agent.spool import Credentials
from cloudassist.v1 import admin_pb2, admin_pb2_grpc, agent_pb2, agent_pb2_grpc, instance_pb2
from tests.support import ServerProcess, client_channel


async def register(server: ServerProcess, count: int) -> list[tuple[str, str]]:
    async with client_channel(server) as admin_channel:
        activation = await admin_pb2_grpc.AdminServiceStub(admin_channel).CreateActivation(
            admin_pb2.CreateActivationRequest(region_id="cn-hangzhou", max_registrations=count)
        )
    async with aio.insecure_channel(server.agent_address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        responses = await asyncio.gather(
            *(
                stub.Register(
                    agent_pb2.RegisterRequest(
                        activation_id=activation.activation.activation_id,
                        activation_code=activation.activation_code,
                        instance_id=f"i-burst-{n:03d}",
                        os_type=instance_pb2.OS_TYPE_LINUX,
                    )
                )
                for n in range(count)
            )
        )
    return [(r.instance_id, r.instance_secret) for r in responses]


def hello(instance_id: str, secret: str) -> agent_pb2.ConnectRequest:
    return agent_pb2.ConnectRequest(
        hello=agent_pb2.Hello(
            instance_id=instance_id,
            instance_secret=secret,
            os_type=instance_pb2.OS_TYPE_LINUX,
            protocol_version=2,
        )
    )


async def test_a_burst_beyond_the_limit_all_ends_connected(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "server",
        "--max-agent-connects-per-second", "2",
        "--max-agent-connects-in-flight", "2",
    )  # fmt: skip
    server.start()
    calls: list[aio.StreamStreamCall] = []  # type: ignore[type-arg]
    refusals: list[grpc.StatusCode] = []
    waits: list[float] = []
    try:
        credentials = await register(server, 50)
        async with aio.insecure_channel(server.agent_address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)

            async def connect(instance_id: str, secret: str) -> None:
                while True:
                    call = stub.Connect()
                    try:
                        await call.write(hello(instance_id, secret))
                        first = await call.read()
                    except aio.AioRpcError as error:
                        refusals.append(error.code())
                        wait = retry_after(error)
                        waits.append(-1.0 if wait is None else wait)
                        await asyncio.sleep((wait or 0.5) * random.uniform(1, 1.2))
                        continue
                    assert first.WhichOneof("message") == "welcome"
                    calls.append(call)
                    return

            started = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(*(connect(i, s) for i, s in credentials)), timeout=60
            )
            took = time.monotonic() - started
            for call in calls:
                call.cancel()
    finally:
        server.stop()
    assert len(calls) == 50
    # Refused for now, each with a time to come back; nothing else (no INTERNAL).
    assert refusals
    assert set(refusals) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert min(waits) > 0, "a refusal without a time to come back"
    # The refused were spread out: not all told the same time.
    assert len(set(waits)) > len(waits) // 2
    # Two a second with a line's worth (40) at once: the last ten are told to come back after
    # the line is stored at the rate the server starts from (the limit: 20 s), then one by one.
    assert took < 45
    assert len(refusals) < 4 * 10


class NoTasks:
    """A peer that holds no tasks (the connection is what is tested)."""

    def progress(self) -> list[wire.Progress]:
        return []

    def welcomed(self, acks: dict[str, wire.Ack]) -> None:
        pass

    def apply(self, order: wire.Order) -> None:
        pass

    async def upload(self, outbox: Outbox, protocol: int) -> None:
        await asyncio.Event().wait()


async def test_the_agent_comes_back_when_the_server_says(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One hello a second, a line of 20: once a hello is refused, the agent's is refused too,
    with a time to come back, and the agent connects after that time, not at its backoff's
    first attempt (under half a second)."""
    server = ServerProcess(tmp_path / "server", "--max-agent-connects-per-second", "1")
    server.start()
    caplog.set_level(logging.INFO, logger="cloudassist.agent.connection")
    try:
        *others, (instance_id, secret) = await register(server, 31)
        async with aio.insecure_channel(server.agent_address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            # Hellos until one is refused: the line is full, whatever the machine's pace.
            held = []
            refused: aio.AioRpcError | None = None
            for other_id, other_secret in others:
                call = stub.Connect()
                await call.write(hello(other_id, other_secret))
                try:
                    await call.read()
                except aio.AioRpcError as error:
                    refused = error
                    break
                held.append(call)
            assert refused is not None, "no hello was refused"
            assert retry_after(refused) is not None
            config = AgentConfig(server=server.agent_address, max_backoff_seconds=0.5)

            async def save(_: Credentials) -> None:
                pass

            connection = Connection(
                config,
                Credentials(instance_id, secret, "cn-hangzhou"),
                save,
                NoTasks(),
                boot_id="boot",
                powershell=False,
            )
            started = time.monotonic()
            running = asyncio.create_task(connection.run())
            try:
                await asyncio.wait_for(connection.connected.wait(), 20)
                took = time.monotonic() - started
            finally:
                connection.stop()
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
            for call in held:
                call.cancel()
    finally:
        server.stop()
    told = [
        float(m.group(1))
        for m in (
            re.search(r"RESOURCE_EXHAUSTED: .* retry in ([0-9.]+) s", r.getMessage())
            for r in caplog.records
        )
        if m
    ]
    assert told, "the agent was not refused"
    # It waited what it was told (the message rounds to a tenth), then connected.
    assert sum(told) - 0.05 * len(told) <= took < sum(told) * 1.2 + 5
