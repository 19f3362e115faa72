"""A real server and three real agents on loopback, shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from cloudassist.v1 import command_pb2_grpc, instance_pb2_grpc
from tests.support import AgentProcess, ServerProcess, client_channel

AGENTS = ("i-a", "i-b", "i-c")


@dataclass
class Cluster:
    server: ServerProcess
    agents: dict[str, AgentProcess]
    workdir: Path


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    # A 1 s minimum timeout keeps the timeout tests short; everything else is the default.
    server = ServerProcess(workdir / "server", "--min-timeout", "1", "--stop-grace", "5")
    agents = {i: AgentProcess(server, i, workdir) for i in AGENTS}
    server.start()
    try:
        for agent in agents.values():
            agent.start()
        yield Cluster(server, agents, workdir)
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


@pytest.fixture
async def channel(cluster: Cluster) -> AsyncIterator[aio.Channel]:
    async with client_channel(cluster.server) as channel:
        yield channel


@pytest.fixture
def stub(channel: aio.Channel) -> command_pb2_grpc.CommandServiceStub:
    return command_pb2_grpc.CommandServiceStub(channel)


@pytest.fixture
def instances_stub(channel: aio.Channel) -> instance_pb2_grpc.InstanceServiceStub:
    return instance_pb2_grpc.InstanceServiceStub(channel)
