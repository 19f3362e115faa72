"""grpc.health.v1 as a load balancer or mesh sees it: each service NOT_SERVING while the
database does not answer (a real PostgreSQL server is stopped and started again), the process
("", for liveness) still SERVING then; everything NOT_SERVING while the server drains."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.postgres import PostgresServer
from tests.support import ServerProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROCESS = ""
SERVICES = (
    "cloudassist.v1.CommandService",
    "cloudassist.v1.InstanceService",
    "cloudassist.v1.AdminService",
    "cloudassist.v1.AgentService",
)


class HealthWatch:
    """One Health/Watch stream per service; `next_status` awaits the next status sent."""

    def __init__(self, channel: aio.Channel) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        self._streams = {
            name: stub.Watch(health_pb2.HealthCheckRequest(service=name))
            for name in (PROCESS, *SERVICES)
        }

    async def next_status(self, service: str) -> int:
        response = await asyncio.wait_for(self._streams[service].read(), 30)
        assert response is not aio.EOF, f"the health stream of {service!r} ended"
        return int(response.status)

    async def become(self, status: int, services: tuple[str, ...]) -> None:
        """Each of `services`' streams reports `status` (possibly after older statuses)."""
        for service in services:
            while (seen := await self.next_status(service)) != status:
                assert seen in (SERVING, NOT_SERVING), seen

    async def all_become(self, status: int) -> None:
        await self.become(status, (PROCESS, *SERVICES))

    def cancel(self) -> None:
        for stream in self._streams.values():
            stream.cancel()


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def channel_to(tmp_path: Path) -> AsyncIterator[list[aio.Channel]]:
    channels: list[aio.Channel] = []
    yield channels
    for channel in channels:
        await channel.close()


async def test_not_serving_while_the_database_is_down(
    postgres: PostgresServer, tmp_path: Path, channel_to: list[aio.Channel]
) -> None:
    server = ServerProcess(
        tmp_path / "server", "--health-interval", "0.5", db_url=postgres.new_database()
    )
    server.start()
    try:
        channel = aio.insecure_channel(server.address)
        channel_to.append(channel)
        watch = HealthWatch(channel)
        await watch.all_become(SERVING)

        await asyncio.to_thread(postgres.halt)
        await watch.become(NOT_SERVING, SERVICES)
        check = health_pb2_grpc.HealthStub(channel).Check
        reply = await check(health_pb2.HealthCheckRequest(service="cloudassist.v1.CommandService"))
        assert reply.status == NOT_SERVING
        # The process is alive: a liveness probe must not restart it for its database.
        reply = await check(health_pb2.HealthCheckRequest(service=PROCESS))
        assert reply.status == SERVING
        assert "does not answer" in server.log()

        await asyncio.to_thread(postgres.resume)
        await watch.become(SERVING, SERVICES)
        assert "answers again" in server.log()
        watch.cancel()
        assert server.running()
    finally:
        server.stop()


async def test_not_serving_while_draining(tmp_path: Path, channel_to: list[aio.Channel]) -> None:
    # A long grace: the drain lasts while the watch is open, so NOT_SERVING is seen before the
    # server closes the streams.
    server = ServerProcess(tmp_path / "server", "--shutdown-grace", "3")
    server.start()
    channel = aio.insecure_channel(server.address)
    channel_to.append(channel)
    watch = HealthWatch(channel)
    await watch.all_become(SERVING)
    os.kill(server.pid, signal.SIGTERM)
    try:
        await watch.all_become(NOT_SERVING)
    finally:
        watch.cancel()
        assert server.stop() == 0


async def test_a_drain_delay_keeps_answering_not_serving(
    tmp_path: Path, channel_to: list[aio.Channel]
) -> None:
    # Load balancers that poll Health/Check (rather than watch) see NOT_SERVING before the
    # listener closes.
    server = ServerProcess(tmp_path / "server", "--drain-delay", "30")
    server.start()
    try:
        channel = aio.insecure_channel(server.address)
        channel_to.append(channel)
        check = health_pb2_grpc.HealthStub(channel).Check
        request = health_pb2.HealthCheckRequest(service="cloudassist.v1.CommandService")
        assert (await check(request)).status == SERVING
        os.kill(server.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while (await check(request)).status == SERVING:  # until the signal is handled
            assert loop.time() < deadline, "still SERVING after SIGTERM"
        assert (await check(health_pb2.HealthCheckRequest(service=PROCESS))).status == NOT_SERVING
        assert server.running(), "the delay keeps the server answering"
    finally:
        server.stop(signal.SIGKILL)
