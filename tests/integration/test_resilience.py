"""Faults injected for real: links cut, servers and agents killed, agents offline, load, drain."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import REGION, invocation, read_output, results, run, watch
from tests.support import (
    AgentProcess,
    ServerProcess,
    TcpProxy,
    client_channel,
    process_gone,
    wait_until,
)

Stub = command_pb2_grpc.CommandServiceStub
MIB = 1024 * 1024


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    marker = request.node.get_closest_marker("delivery_timeout")
    delivery_timeout = str(marker.args[0]) if marker else "6"
    process = ServerProcess(
        tmp_path / "server", "--min-timeout", "1", "--delivery-timeout", delivery_timeout,
        "--shutdown-grace", "5", "--max-output-bytes", str(64 * MIB),
    )  # fmt: skip
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def agents(tmp_path: Path, server: ServerProcess) -> Iterator[dict[str, AgentProcess]]:
    """The agents a test starts; all are stopped at its end."""
    started: dict[str, AgentProcess] = {}
    yield started
    for agent in started.values():
        agent.stop()


@pytest.fixture
async def stub(server: ServerProcess) -> AsyncIterator[Stub]:
    async with client_channel(server) as channel:
        yield command_pb2_grpc.CommandServiceStub(channel)


def start_agent(
    agents: dict[str, AgentProcess], server: ServerProcess, tmp_path: Path, instance_id: str
) -> AgentProcess:
    agent = AgentProcess(server, instance_id, tmp_path)
    agents[instance_id] = agent
    agent.start()
    return agent


async def first_output(stub: Stub, invoke_id: str, lines: int = 1) -> bytes:
    """Output of the invocation up to `lines` complete lines (the script is running)."""
    data = bytearray()
    stream = stub.WatchInvocation(pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    async for event in stream:
        if event.HasField("output"):
            data += event.output.data
            if data.count(b"\n") >= lines:
                stream.cancel()
                break
    return bytes(data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# A script that writes 20 MiB of random bytes over about four seconds, keeping a copy.
def slow_random_script(copy: Path, mib: int = 20) -> str:
    return (
        f"for i in $(seq {mib * 2}); do head -c 524288 /dev/urandom; sleep 0.1; done | tee {copy}"
    )


async def output_progress(stub: Stub, invoke_id: str, at_least: int) -> None:
    """Waits until the server has stored `at_least` bytes of the invocation's output."""
    stream = stub.WatchInvocation(pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    async for event in stream:
        if event.HasField("output") and event.output.offset + len(event.output.data) >= at_least:
            stream.cancel()
            return


async def test_output_survives_a_link_cut_twice(
    tmp_path: Path, server: ServerProcess, agents: dict[str, AgentProcess], stub: Stub
) -> None:
    proxy = TcpProxy(tmp_path, server.port)
    proxy.start()
    agent = AgentProcess(server, "i-link", tmp_path)
    agent.via = proxy.address
    agents["i-link"] = agent
    agent.start()
    copy = tmp_path / "sent.bin"
    try:
        invoke_id = await run(stub, slow_random_script(copy), ["i-link"])
        for cut_after in (3 * MIB, 9 * MIB):
            await output_progress(stub, invoke_id, cut_after)
            proxy.kill()
            await asyncio.sleep(0.5)  # the link stays down for a while
            proxy.start()
        seen = await watch(stub, invoke_id)
    finally:
        proxy.stop()
    expected = copy.read_bytes()
    assert len(expected) == 20 * MIB
    stored, _ = await read_output(stub, invoke_id, "i-link")
    assert len(stored) == len(expected), "no byte lost or duplicated"
    assert sha256(stored) == sha256(expected)
    assert sha256(bytes(seen.output["i-link"])) == sha256(expected)
    assert seen.states["i-link"].state == pb.EXECUTION_STATE_SUCCESS
    assert "connection to" in agent.log(), "the agent did lose its stream"


async def test_server_killed_mid_run_then_restarted(
    tmp_path: Path, server: ServerProcess, agents: dict[str, AgentProcess]
) -> None:
    start_agent(agents, server, tmp_path, "i-srv")
    copy = tmp_path / "sent.bin"
    async with client_channel(server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        heavy = await run(stub, slow_random_script(copy), ["i-srv"])
        doomed = await run(stub, "sleep 1000 & echo $!; sleep 1000", ["i-srv"], timeout_seconds=3)
        pid = int((await first_output(stub, doomed)).split()[0])
        await output_progress(stub, heavy, 4 * MIB)
    server.kill()
    await asyncio.sleep(4)  # `doomed` passes its 3 s timeout while the server is down
    server.start()
    async with client_channel(server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        seen = await watch(stub, heavy)
        expected = copy.read_bytes()
        stored, _ = await read_output(stub, heavy, "i-srv")
        assert sha256(stored) == sha256(expected)
        assert len(stored) == 20 * MIB
        assert seen.states["i-srv"].state == pb.EXECUTION_STATE_SUCCESS
        timed_out = await watch(stub, doomed)
        assert timed_out.states["i-srv"].state == pb.EXECUTION_STATE_TIMEOUT
        assert timed_out.states["i-srv"].error_code == "ExecutionTimeout"
    assert process_gone(pid)


async def test_agent_killed_mid_run_then_restarted(
    tmp_path: Path, server: ServerProcess, agents: dict[str, AgentProcess], stub: Stub
) -> None:
    agent = start_agent(agents, server, tmp_path, "i-crash")
    invoke_id = await run(
        stub, "echo before the crash; sleep 1000 & echo $!; sleep 1000", ["i-crash"]
    )
    printed = await first_output(stub, invoke_id, lines=2)
    orphan = int(printed.split(b"\n")[1])

    agent.kill()
    assert not process_gone(orphan), "killing the agent leaves its task's processes behind"
    agent.start()

    seen = await watch(stub, invoke_id)
    change = seen.states["i-crash"]
    assert change.state == pb.EXECUTION_STATE_ERROR
    assert change.invoke_record_status == pb.INVOKE_STATUS_FAILED
    assert change.error_code == "ClientRestarted"
    stored, _ = await read_output(stub, invoke_id, "i-crash")
    assert stored == printed, "output produced before the crash is kept"
    wait_until(lambda: process_gone(orphan), 10, "the orphaned process group to be killed")


# Long enough for an agent to start on a loaded machine: only the delivery is under test.
@pytest.mark.delivery_timeout(60)
async def test_offline_target_is_delivered_when_its_agent_connects(
    tmp_path: Path, server: ServerProcess, agents: dict[str, AgentProcess], stub: Stub
) -> None:
    start_agent(agents, server, tmp_path, "i-up")
    late = start_agent(agents, server, tmp_path, "i-late")
    late.stop()
    late.wait_online(False)

    invoke_id = await run(stub, "echo delivered", ["i-up", "i-late"])
    before = await results(stub, invoke_id)
    assert before["i-late"].state == pb.EXECUTION_STATE_PENDING
    late.start()  # within the delivery timeout

    seen = await watch(stub, invoke_id)
    assert {i: s.state for i, s in seen.states.items()} == {
        "i-up": pb.EXECUTION_STATE_SUCCESS,
        "i-late": pb.EXECUTION_STATE_SUCCESS,
    }
    assert bytes(seen.output["i-late"]) == b"delivered\n"


async def test_offline_target_is_aborted_after_the_delivery_timeout(
    tmp_path: Path, server: ServerProcess, agents: dict[str, AgentProcess], stub: Stub
) -> None:
    start_agent(agents, server, tmp_path, "i-up")
    gone = start_agent(agents, server, tmp_path, "i-gone")
    gone.stop()
    gone.wait_online(False)

    started = time.monotonic()
    invoke_id = await run(stub, "echo fine", ["i-up", "i-gone"])
    seen = await watch(stub, invoke_id)

    assert time.monotonic() - started >= 5.5
    assert seen.states["i-up"].state == pb.EXECUTION_STATE_SUCCESS
    aborted = seen.states["i-gone"]
    assert aborted.state == pb.EXECUTION_STATE_ABORTED
    assert aborted.invoke_record_status == pb.INVOKE_STATUS_FAILED
    assert aborted.error_code == "ClientNotOnline"
    assert (await invocation(stub, invoke_id)).invoke_status == pb.INVOKE_STATUS_PARTIAL_FAILED
    # The agent that comes back later does not run the aborted task (a later task runs, and
    # the aborted one is still ABORTED with no output).
    gone.start()
    later = await watch(stub, await run(stub, "echo later", ["i-gone"]))
    assert bytes(later.output["i-gone"]) == b"later\n"
    after = (await results(stub, invoke_id))["i-gone"]
    assert after.state == pb.EXECUTION_STATE_ABORTED
    assert after.output_size == 0


@pytest.mark.timeout(300)  # twenty agent processes start at once on a small machine
async def test_twenty_agents_one_hundred_invocations_of_a_mebibyte(
    tmp_path: Path, server: ServerProcess, agents: dict[str, AgentProcess], stub: Stub
) -> None:
    fleet = [AgentProcess(server, f"i-load-{n:02d}", tmp_path) for n in range(20)]
    for agent in fleet:
        agents[agent.instance_id] = agent
        agent.start_process()
    for agent in fleet:
        agent.wait_online(True)
    copies = tmp_path / "copies"
    copies.mkdir()
    script = f"head -c {MIB} /dev/urandom | tee {copies}/{{{{ACS::InvokeId}}}}"
    invoke_ids = await asyncio.gather(
        *(run(stub, script, [fleet[n % 20].instance_id], enable_parameter=True) for n in range(100))
    )
    watched = await asyncio.gather(*(watch(stub, i) for i in invoke_ids))
    for invoke_id, seen in zip(invoke_ids, watched, strict=True):
        [(instance_id, change)] = seen.states.items()
        assert change.state == pb.EXECUTION_STATE_SUCCESS, (invoke_id, change)
        expected = (copies / invoke_id).read_bytes()
        assert len(expected) == MIB
        assert sha256(bytes(seen.output[instance_id])) == sha256(expected)
    running = await stub.DescribeInvocationResults(
        pb.DescribeInvocationResultsRequest(
            region_id=REGION, invoke_record_status=pb.INVOKE_STATUS_RUNNING
        )
    )
    assert running.total_count == 0


async def test_sigterm_drains_and_a_restart_resumes(
    tmp_path: Path, server: ServerProcess, agents: dict[str, AgentProcess]
) -> None:
    agent = start_agent(agents, server, tmp_path, "i-drain")
    copy = tmp_path / "sent.bin"
    async with client_channel(server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        invoke_id = await run(stub, slow_random_script(copy, mib=8), ["i-drain"])
        await output_progress(stub, invoke_id, 2 * MIB)
        health = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await health.read()).status == health_pb2.HealthCheckResponse.SERVING
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert (await health.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    # Exits on its own (5 s grace, then the output flush), well before it would be killed.
    assert server.stop(timeout=15) == 0
    wait_until(lambda: "server asked to reconnect" in agent.log(), 10, "the agent to be told")

    server.start()
    async with client_channel(server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        seen = await watch(stub, invoke_id)
        stored, _ = await read_output(stub, invoke_id, "i-drain")
    assert seen.states["i-drain"].state == pb.EXECUTION_STATE_SUCCESS
    assert sha256(stored) == sha256(copy.read_bytes())
