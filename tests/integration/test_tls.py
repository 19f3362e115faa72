"""TLS for both APIs and mTLS for agents, with certificates made for the test."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import command_pb2, command_pb2_grpc
from tests.certs import Authority, Pair
from tests.integration.helpers import watch
from tests.support import (
    BIN,
    START_TIMEOUT,
    AgentProcess,
    Process,
    ServerProcess,
    client_channel,
    wait_until,
)

REGION = "cn-hangzhou"


@dataclass
class Secured:
    server: ServerProcess
    ca: Authority
    workdir: Path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    workdir = tmp_path_factory.mktemp("tls")
    ca = Authority(workdir / "pki")
    cert = ca.issue("localhost", server=True)
    server = ServerProcess(
        workdir / "server",
        "--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
        "--agent-listen", "127.0.0.1:0", "--agent-ca", str(ca.pem),
        ca=ca.pem,
    )  # fmt: skip
    server.start()
    try:
        yield Secured(server, ca, workdir)
    finally:
        server.stop()


def tls_agent(
    secured: Secured, instance_id: str, pair: Pair, ca: Path | None = None
) -> AgentProcess:
    agent = AgentProcess(secured.server, instance_id, secured.workdir)
    agent.extra = [
        "--ca",
        str(ca or secured.ca.pem),
        "--cert",
        str(pair.cert),
        "--key",
        str(pair.key),
    ]
    return agent


async def test_the_api_is_served_over_tls_only(secured: Secured) -> None:
    async with client_channel(secured.server) as channel:
        listed = await command_pb2_grpc.CommandServiceStub(channel).DescribeCommands(
            command_pb2.DescribeCommandsRequest(region_id=REGION)
        )
        assert listed.total_count == 0
    async with aio.insecure_channel(secured.server.address) as plain:
        with pytest.raises(aio.AioRpcError) as caught:
            await command_pb2_grpc.CommandServiceStub(plain).DescribeCommands(
                command_pb2.DescribeCommandsRequest(region_id=REGION), timeout=5
            )
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_an_agent_with_its_certificate_runs_scripts(secured: Secured) -> None:
    agent = tls_agent(secured, "i-tls", secured.ca.issue("i-tls"))
    agent.start()
    try:
        async with client_channel(secured.server) as channel:
            stub = command_pb2_grpc.CommandServiceStub(channel)
            ran = await stub.RunCommand(
                command_pb2.RunCommandRequest(
                    region_id=REGION,
                    type=command_pb2.COMMAND_TYPE_RUN_SHELL_SCRIPT,
                    command_content=b"echo over mTLS",
                    instance_ids=["i-tls"],
                )
            )
            seen = await watch(stub, ran.invoke_id)
        assert bytes(seen.output["i-tls"]) == b"over mTLS\n"
    finally:
        agent.stop()


def _refused(agent: AgentProcess, marker: str) -> None:
    agent.start_process()
    try:
        assert agent.proc is not None
        # The first attempt fails and the agent says why: its registration was refused (it
        # exits) or the handshake was (it retries, and would fail the same way again).
        wait_until(
            lambda: marker in agent.log() or not agent.running(),
            START_TIMEOUT,
            f"the agent to log {marker}",
        )
        assert marker in agent.log(), agent.log()
        assert "connected to" not in agent.log()
        assert agent.running() or agent.proc.returncode != 0
    finally:
        agent.stop()


def test_an_agent_whose_certificate_names_another_instance_is_refused(secured: Secured) -> None:
    _refused(tls_agent(secured, "i-claimed", secured.ca.issue("i-someone-else")), "UNAUTHENTICATED")


def test_an_agent_with_a_certificate_from_another_ca_is_refused(secured: Secured) -> None:
    rogue = Authority(secured.workdir / "rogue", name="rogue CA")
    _refused(tls_agent(secured, "i-rogue", rogue.issue("i-rogue")), "UNAVAILABLE")


def test_an_agent_without_a_client_certificate_is_refused(secured: Secured) -> None:
    agent = AgentProcess(secured.server, "i-anonymous", secured.workdir)
    agent.extra = ["--ca", str(secured.ca.pem)]
    _refused(agent, "UNAVAILABLE")


def test_plaintext_on_a_public_address_needs_insecure(tmp_path: Path) -> None:
    server = Process(
        [str(BIN / "cloudassist-server"), "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path)],
        tmp_path / "server.log",
    )
    server.start()
    assert server.proc is not None
    assert server.proc.wait(30) != 0
    assert "refusing plaintext on 0.0.0.0:0" in server.log()
    assert "--insecure" in server.log()


async def test_the_cli_talks_tls(secured: Secured) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "cloudassist"), "--server", f"localhost:{secured.server.port}",
        "--ca", str(secured.ca.pem), "--api-key", secured.server.admin_key, "instances",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert b"INSTANCE_ID" in out
    assert sys.executable  # the CLI ran from this venv
