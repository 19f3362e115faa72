"""Reboot modes with a real agent: a boot is simulated by restarting it with a new boot id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import REGION, invocation, watch
from tests.support import AgentProcess, ServerProcess, client_channel

Stub = command_pb2_grpc.CommandServiceStub


@dataclass
class Machine:
    server: ServerProcess
    agent: AgentProcess
    boot_id_file: Path

    async def boot(self, boot_id: str) -> None:
        """Restarts the agent as if the machine had booted with `boot_id`."""
        self.agent.stop()
        await asyncio.to_thread(self.agent.wait_online, False)
        self.boot_id_file.write_text(boot_id + "\n")
        await asyncio.to_thread(self.agent.start)


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    workdir = tmp_path_factory.mktemp("reboot")
    boot_id_file = workdir / "boot_id"
    boot_id_file.write_text("boot-0\n")
    server = ServerProcess(workdir / "server")
    agent = AgentProcess(server, "i-boot", workdir)
    agent.extra = ["--boot-id-file", str(boot_id_file)]
    server.start()
    try:
        agent.start()
        yield Machine(server, agent, boot_id_file)
    finally:
        agent.stop()
        server.stop()


@pytest.fixture
async def stub(machine: Machine) -> AsyncIterator[Stub]:
    async with client_channel(machine.server) as channel:
        yield command_pb2_grpc.CommandServiceStub(channel)


async def _history(stub: Stub, invoke_id: str) -> list[pb.InvocationResult]:
    response = await stub.DescribeInvocationResults(
        pb.DescribeInvocationResultsRequest(
            region_id=REGION, invoke_id=invoke_id, include_history=True, page_size=50
        )
    )
    return sorted(response.invocation_results, key=lambda r: r.record_id)


async def _invoke(stub: Stub, mode: pb.RepeatMode.ValueType, script: str) -> str:
    response = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=REGION,
            type=pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
            command_content=script.encode(),
            instance_ids=["i-boot"],
            repeat_mode=mode,
        )
    )
    return response.invoke_id


async def _until_records(stub: Stub, invoke_id: str, count: int) -> list[pb.InvocationResult]:
    """The invocation's records once `count` of them have finished (followed live)."""
    finished: set[str] = set()
    stream = stub.WatchInvocation(pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    async for event in stream:
        change = event.state_change
        if event.HasField("state_change") and change.state == pb.EXECUTION_STATE_SUCCESS:
            finished.add(change.record_id)
            if len(finished) >= count:
                stream.cancel()
                break
    return await _history(stub, invoke_id)


async def test_next_reboot_only_runs_once_after_the_next_boot(stub: Stub, machine: Machine) -> None:
    invoke_id = await _invoke(stub, pb.REPEAT_MODE_NEXT_REBOOT_ONLY, "echo after boot")
    await machine.boot("boot-0")  # the agent restarts, the machine did not boot
    assert await _history(stub, invoke_id) == []
    assert (await invocation(stub, invoke_id)).invoke_status == pb.INVOKE_STATUS_RUNNING

    await machine.boot("boot-1")
    (record,) = await _until_records(stub, invoke_id, 1)
    assert record.output == b"after boot\n"
    seen = await watch(stub, invoke_id)  # ends: the invocation is over
    assert seen.states["i-boot"].state == pb.EXECUTION_STATE_SUCCESS
    assert (await invocation(stub, invoke_id)).invoke_status == pb.INVOKE_STATUS_FINISHED

    await machine.boot("boot-2")
    assert len(await _history(stub, invoke_id)) == 1, "only the next boot"


async def test_every_reboot_runs_after_each_boot_until_stopped(
    stub: Stub, machine: Machine
) -> None:
    invoke_id = await _invoke(stub, pb.REPEAT_MODE_EVERY_REBOOT, "echo booted")
    await machine.boot("boot-3")
    await _until_records(stub, invoke_id, 1)
    await machine.boot("boot-4")
    records = await _until_records(stub, invoke_id, 2)
    assert [r.output for r in records] == [b"booted\n", b"booted\n"]
    assert (await invocation(stub, invoke_id)).invoke_status == pb.INVOKE_STATUS_RUNNING

    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    assert (await invocation(stub, invoke_id)).invoke_status == pb.INVOKE_STATUS_STOPPED
    await machine.boot("boot-5")
    assert len(await _history(stub, invoke_id)) == 2, "no run after the stop"
