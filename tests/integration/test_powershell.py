"""PowerShell on a Linux agent that enables it (`--powershell`).

No pwsh is installed here, so a stand-in takes its place: a shell script that shows the
arguments the agent gave it and runs the .ps1 file's lines as shell. What is tested is the
agent's side (the instance advertises PowerShell, the server lets it run there, the file and
the command line the agent makes), not PowerShell itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc, instance_pb2, instance_pb2_grpc
from tests.integration.helpers import REGION, error_details, watch
from tests.support import AgentProcess, ServerProcess, client_channel

STAND_IN = """#!/bin/sh
# pwsh -File runs only files named *.ps1: the stand-in shows the file's extension.
echo "pwsh $1 $2 $3 $4 *.${5##*.}"
. "$5"
"""


@dataclass
class Pair:
    server: ServerProcess


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    workdir = tmp_path_factory.mktemp("pwsh")
    pwsh = workdir / "pwsh"
    pwsh.write_text(STAND_IN)
    pwsh.chmod(0o755)
    server = ServerProcess(workdir / "server")
    with_pwsh = AgentProcess(server, "i-pwsh", workdir)
    with_pwsh.extra = ["--powershell", str(pwsh)]
    without = AgentProcess(server, "i-sh", workdir)
    server.start()
    try:
        with_pwsh.start()
        without.start()
        yield Pair(server)
    finally:
        with_pwsh.stop()
        without.stop()
        server.stop()


def _run(instance_id: str) -> pb.RunCommandRequest:
    return pb.RunCommandRequest(
        region_id=REGION,
        type=pb.COMMAND_TYPE_RUN_POWERSHELL_SCRIPT,
        command_content=b"echo from the script",
        instance_ids=[instance_id],
    )


async def test_powershell_runs_through_pwsh_where_it_is_enabled(pair: Pair) -> None:
    async with client_channel(pair.server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        ran = await stub.RunCommand(_run("i-pwsh"))
        seen = await watch(stub, ran.invoke_id)
    assert seen.states["i-pwsh"].state == pb.EXECUTION_STATE_SUCCESS
    assert bytes(seen.output["i-pwsh"]) == (
        b"pwsh -NoLogo -NoProfile -NonInteractive -File *.ps1\nfrom the script\n"
    )


async def test_powershell_is_refused_where_it_is_not(pair: Pair) -> None:
    before = pair.server.row_counts()
    async with client_channel(pair.server) as channel:
        with pytest.raises(aio.AioRpcError) as caught:
            await command_pb2_grpc.CommandServiceStub(channel).RunCommand(_run("i-sh"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(caught.value)[0].reason == "InvalidInstance.NotMatch"
    assert pair.server.row_counts() == before


async def test_instances_list_the_command_types_they_run(pair: Pair) -> None:
    """What a client (the console's instance picker) needs to tell which instances can run a
    command, without knowing the OS rules."""
    async with client_channel(pair.server) as channel:
        found = await instance_pb2_grpc.InstanceServiceStub(channel).DescribeInstances(
            instance_pb2.DescribeInstancesRequest(region_id=REGION)
        )
    types = {i.instance_id: list(i.command_types) for i in found.instances}
    assert types == {
        "i-pwsh": [pb.COMMAND_TYPE_RUN_SHELL_SCRIPT, pb.COMMAND_TYPE_RUN_POWERSHELL_SCRIPT],
        "i-sh": [pb.COMMAND_TYPE_RUN_SHELL_SCRIPT],
    }
