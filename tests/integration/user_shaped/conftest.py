"""A fleet as users have one: agents registered in no particular order, in two regions, and a
second (non-admin) account with agents and an API key of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from grpc import aio

from cloudassist.v1 import admin_pb2, admin_pb2_grpc
from tests.support import AgentProcess, ServerProcess, client_channel

HOME = "cn-hangzhou"
AWAY = "eu-west-1"
# The admin's agents in HOME, started (and so registered) in this order: not the ids' order.
HOME_AGENTS = ("u-c", "u-a", "u-b")
AWAY_AGENT = "u-eu"  # the admin's agent in AWAY
TENANT_AGENT = "t-hz"  # the second account's agent, in HOME


@dataclass
class Fleet:
    server: ServerProcess
    agents: dict[str, AgentProcess]
    tenant_key: str  # the API key of the second account
    tenant_account: str
    tenant_activation: str  # the id of the second account's single-use activation
    workdir: Path


@pytest.fixture(scope="package")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("fleet")
    server = ServerProcess(workdir / "server", "--min-timeout", "1", "--stop-grace", "5")
    agents: dict[str, AgentProcess] = {}
    server.start()
    try:
        with server.sync_channel() as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            account = admin.CreateAccount(
                admin_pb2.CreateAccountRequest(name="team-b"), metadata=server.metadata
            ).account
            key = admin.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(account_id=account.account_id),
                metadata=tuple(server.metadata),
            ).token
            # As a user makes one: the defaults (one registration, valid for a day).
            activation = admin.CreateActivation(
                admin_pb2.CreateActivationRequest(
                    account_id=account.account_id, region_id=HOME, description="équipe B — 团队"
                ),
                metadata=tuple(server.metadata),
            )
        for instance_id in HOME_AGENTS:
            agents[instance_id] = AgentProcess(server, instance_id, workdir)
        agents[AWAY_AGENT] = AgentProcess(server, AWAY_AGENT, workdir, region=AWAY)
        agents[TENANT_AGENT] = AgentProcess(
            server,
            TENANT_AGENT,
            workdir,
            activation=(activation.activation.activation_id, activation.activation_code),
            api_key=key,
        )
        # Started one after the other (registration order is start order), then awaited.
        for agent in agents.values():
            agent.start_process()
            agent.wait_online(True)
        yield Fleet(
            server, agents, key, account.account_id, activation.activation.activation_id, workdir
        )
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


@pytest.fixture
async def admin(fleet: Fleet) -> AsyncIterator[aio.Channel]:
    async with client_channel(fleet.server) as channel:
        yield channel


@pytest.fixture
async def tenant(fleet: Fleet) -> AsyncIterator[aio.Channel]:
    async with client_channel(fleet.server, fleet.tenant_key) as channel:
        yield channel
