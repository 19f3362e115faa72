"""Three servers on one real PostgreSQL: agents on any, clients on any, each fire and each
expiry once, and a server killed mid-run loses nothing."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import admin_pb2, admin_pb2_grpc, command_pb2_grpc
from cloudassist.v1 import command_pb2 as pb
from tests.integration.helpers import REGION, read_output, watch
from tests.postgres import PostgresServer
from tests.support import AgentProcess, ServerProcess, client_channel, process_gone

SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT
MIB = 1024 * 1024


@dataclass
class Cluster:
    servers: dict[str, ServerProcess]
    agents: dict[str, AgentProcess]
    workdir: Path


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster3")
    postgres = PostgresServer()
    postgres.start()
    url = postgres.new_database()
    servers = {
        name: ServerProcess(workdir / name, "--min-timeout", "1", "--max-output-bytes",
                            str(64 * MIB), db_url=url)
        for name in ("a", "b", "c")
    }  # fmt: skip
    agents: dict[str, AgentProcess] = {}
    try:
        servers["a"].start()  # the first start creates the admin key; share it
        for name in ("b", "c"):
            (workdir / name).mkdir(exist_ok=True)
            (workdir / name / "admin.key").write_text(servers["a"].admin_key)
            servers[name].start()
        # i-b talks to B (and fails over to A, C); i-c talks to C only.
        agents["i-b"] = AgentProcess(servers["b"], "i-b", workdir)
        agents["i-b"].via = ",".join(servers[n].agent_address for n in ("b", "a", "c"))
        agents["i-c"] = AgentProcess(servers["c"], "i-c", workdir)
        for agent in agents.values():
            agent.start()
        yield Cluster(servers, agents, workdir)
    finally:
        for agent in agents.values():
            agent.stop()
        for server in servers.values():
            server.stop()
        postgres.stop()


async def test_invoke_on_a_watch_on_a_stop_on_c(cluster3: Cluster) -> None:
    a, c = cluster3.servers["a"], cluster3.servers["c"]
    async with client_channel(a) as on_a, client_channel(c) as on_c:
        stub_a = command_pb2_grpc.CommandServiceStub(on_a)
        ran = await stub_a.RunCommand(
            pb.RunCommandRequest(
                region_id=REGION,
                type=SHELL,
                command_content=b"echo started on {{ACS::InstanceId}}; sleep 60",
                enable_parameter=True,
                instance_ids=["i-b", "i-c"],
            )
        )
        # Live output from agents on B and C, through a watch on A.
        started: set[str] = set()
        stream = stub_a.WatchInvocation(
            pb.WatchInvocationRequest(region_id=REGION, invoke_id=ran.invoke_id)
        )
        async for event in stream:
            if event.HasField("output"):
                assert event.output.data == f"started on {event.output.instance_id}\n".encode()
                started.add(event.output.instance_id)
                if started == {"i-b", "i-c"}:
                    stream.cancel()
                    break
        await command_pb2_grpc.CommandServiceStub(on_c).StopInvocation(
            pb.StopInvocationRequest(region_id=REGION, invoke_id=ran.invoke_id)
        )
        seen = await watch(stub_a, ran.invoke_id)
    assert {i: s.state for i, s in seen.states.items()} == {
        "i-b": pb.EXECUTION_STATE_TERMINATED,
        "i-c": pb.EXECUTION_STATE_TERMINATED,
    }


async def _refused_within(stub: command_pb2_grpc.CommandServiceStub, seconds: float) -> float:
    """How long until the stub's key is refused (UNAUTHENTICATED); fails past `seconds`."""
    started = time.monotonic()
    while True:
        try:
            await stub.DescribeCommands(pb.DescribeCommandsRequest(region_id=REGION))
        except aio.AioRpcError as error:
            code = error.code()
            break
        assert time.monotonic() - started < seconds, "the revoked key is still accepted"
        await asyncio.sleep(0.005)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    return time.monotonic() - started


async def test_a_key_revoked_on_a_is_refused_by_b_and_c_as_the_notice_arrives(
    cluster3: Cluster,
) -> None:
    """B and C remember the key they checked (for 5 s); the revocation's NOTIFY, sent on its
    commit, makes them forget it: the key is refused as soon as it arrives, not 5 s later."""
    a, b, c = (cluster3.servers[n] for n in ("a", "b", "c"))
    async with client_channel(a) as on_a:
        admin = admin_pb2_grpc.AdminServiceStub(on_a)
        created = await admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(description="brief"))
        async with (
            client_channel(b, created.token) as on_b,
            client_channel(c, created.token) as on_c,
        ):
            stubs = [command_pb2_grpc.CommandServiceStub(ch) for ch in (on_b, on_c)]
            for stub in stubs:  # checked, and so remembered, by B and C
                await stub.DescribeCommands(pb.DescribeCommandsRequest(region_id=REGION))
            await admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=created.key.key_id))
            # A notification's delivery (milliseconds; a second on a loaded machine at most).
            for stub in stubs:
                await _refused_within(stub, 1.0)


async def test_a_cron_schedule_fires_once_per_slot_with_three_schedulers(cluster3: Cluster) -> None:
    async with client_channel(cluster3.servers["b"]) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        created = await stub.CreateCommand(
            pb.CreateCommandRequest(
                region_id=REGION, name="every 10 s", type=SHELL, command_content=b"echo tick",
                timeout_seconds=5,
            )
        )  # fmt: skip
        invoked = await stub.InvokeCommand(
            pb.InvokeCommandRequest(
                region_id=REGION,
                command_id=created.command_id,
                instance_ids=["i-b", "i-c"],
                repeat_mode=pb.REPEAT_MODE_PERIOD,
                frequency="*/10 * * * * ?",
            )
        )
        finished: Counter[str] = Counter()
        stream = stub.WatchInvocation(
            pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoked.invoke_id)
        )
        async for event in stream:
            if (
                event.HasField("state_change")
                and event.state_change.state == pb.EXECUTION_STATE_SUCCESS
            ):
                finished[event.state_change.record_id] += 1
                if len(finished) >= 6:
                    stream.cancel()
                    break
        await stub.StopInvocation(
            pb.StopInvocationRequest(region_id=REGION, invoke_id=invoked.invoke_id)
        )
        history = await stub.DescribeInvocationResults(
            pb.DescribeInvocationResultsRequest(
                region_id=REGION, invoke_id=invoked.invoke_id, include_history=True, page_size=50
            )
        )
    slots: Counter[tuple[str, int]] = Counter(
        (r.instance_id, round(r.creation_time.ToMilliseconds() / 10_000))
        for r in history.invocation_results
    )
    assert len(slots) >= 6
    assert set(slots.values()) == {1}, "each slot fired once per instance, not once per server"


async def test_a_server_killed_mid_run_loses_nothing(cluster3: Cluster) -> None:
    a, b = cluster3.servers["a"], cluster3.servers["b"]
    copy = cluster3.workdir / "sent.bin"
    script = f"for i in $(seq 16); do head -c 524288 /dev/urandom; sleep 0.1; done | tee {copy}"
    async with client_channel(a) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        heavy = await stub.RunCommand(
            pb.RunCommandRequest(
                region_id=REGION, type=SHELL, command_content=script.encode(), instance_ids=["i-b"]
            )
        )
        doomed = await stub.RunCommand(
            pb.RunCommandRequest(
                region_id=REGION,
                type=SHELL,
                command_content=b"sleep 1000 & echo $!; sleep 1000",
                instance_ids=["i-b"],
                timeout_seconds=4,
            )
        )
        pid = None
        stream = stub.WatchInvocation(
            pb.WatchInvocationRequest(region_id=REGION, invoke_id=doomed.invoke_id)
        )
        async for event in stream:
            if event.HasField("output"):
                pid = int(event.output.data.split()[0])
                stream.cancel()
                break
        assert pid is not None
        started = time.monotonic()
        b.kill()  # SIGKILL: the agent on B must move to A or C
        seen = await watch(stub, heavy.invoke_id)
        stored, _ = await read_output(stub, heavy.invoke_id, "i-b")
        timed_out = await watch(stub, doomed.invoke_id)
    expected = copy.read_bytes()
    assert len(stored) == 8 * MIB
    assert hashlib.sha256(stored).digest() == hashlib.sha256(expected).digest()
    assert seen.states["i-b"].state == pb.EXECUTION_STATE_SUCCESS
    assert timed_out.states["i-b"].state == pb.EXECUTION_STATE_TIMEOUT
    assert process_gone(pid)
    assert time.monotonic() - started < 60
    log = cluster3.agents["i-b"].log()
    assert (
        "connected to " + a.agent_address in log
        or "connected to " + cluster3.servers["c"].agent_address in log
    )
