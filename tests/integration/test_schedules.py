"""Periodic invocations with real time: cron, rate and at fire on time, survive a restart, stop."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import admin_pb2, admin_pb2_grpc, command_pb2_grpc
from cloudassist.v1 import command_pb2 as pb
from tests.integration.helpers import REGION, error_details, invocation, watch
from tests.support import AgentProcess, ServerProcess, client_channel

Stub = command_pb2_grpc.CommandServiceStub
TOLERANCE_MS = 1000
AGENTS = ("s-1", "s-2")
PREVIEW_SCHEDULE = "/cloudassist.v1.CommandService/PreviewSchedule"


@dataclass
class Scheduled:
    server: ServerProcess
    agents: dict[str, AgentProcess]


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scheduled]:
    workdir = tmp_path_factory.mktemp("schedules")
    server = ServerProcess(workdir / "server", "--min-timeout", "1")
    agents = {i: AgentProcess(server, i, workdir) for i in AGENTS}
    server.start()
    try:
        for agent in agents.values():
            agent.start()
        yield Scheduled(server, agents)
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


@pytest.fixture
async def stub(scheduled: Scheduled) -> AsyncIterator[Stub]:
    async with client_channel(scheduled.server) as channel:
        yield command_pb2_grpc.CommandServiceStub(channel)


async def invoke_periodic(
    stub: Stub, frequency: str, script: bytes = b"echo tick", **kw: object
) -> str:
    created = await stub.CreateCommand(
        pb.CreateCommandRequest(
            region_id=REGION,
            name=f"periodic {frequency}",
            type=pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
            command_content=script,
            timeout_seconds=5,
        )
    )
    invoked = await stub.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=REGION,
            command_id=created.command_id,
            instance_ids=list(kw.pop("instances", AGENTS)),  # type: ignore[arg-type]
            repeat_mode=pb.REPEAT_MODE_PERIOD,
            frequency=frequency,
            **kw,  # type: ignore[arg-type]
        )
    )
    return invoked.invoke_id


async def wait_for_runs(stub: Stub, invoke_id: str, runs: int, instances: tuple[str, ...]) -> None:
    """Follows the invocation until every instance has finished `runs` runs."""
    finished: dict[str, set[str]] = defaultdict(set)
    stream = stub.WatchInvocation(pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    async for event in stream:
        change = event.state_change
        if event.HasField("state_change") and change.state == pb.EXECUTION_STATE_SUCCESS:
            finished[change.instance_id].add(change.record_id)
            if all(len(finished[i]) >= runs for i in instances):
                stream.cancel()
                return


async def history(stub: Stub, invoke_id: str) -> list[pb.InvocationResult]:
    response = await stub.DescribeInvocationResults(
        pb.DescribeInvocationResultsRequest(
            region_id=REGION, invoke_id=invoke_id, include_history=True, page_size=50
        )
    )
    return list(reversed(response.invocation_results))  # oldest first


def fire_times(results: list[pb.InvocationResult], instance_id: str) -> list[int]:
    return [r.creation_time.ToMilliseconds() for r in results if r.instance_id == instance_id]


async def test_cron_rate_and_at_fire_on_time(stub: Stub) -> None:
    at_time = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    started_ms = int(time.time() * 1000)
    cron_id = await invoke_periodic(stub, "*/10 * * * * ?")
    rate_id = await invoke_periodic(stub, "rate(10s)", instances=("s-1",))
    at_id = await invoke_periodic(stub, f"at({at_time:%Y-%m-%d %H:%M:%S} UTC)", instances=("s-2",))

    await asyncio.gather(
        wait_for_runs(stub, cron_id, 3, AGENTS),
        wait_for_runs(stub, rate_id, 3, ("s-1",)),
        watch(stub, at_id),
    )

    # Cron: on every 10 s slot, one record per fire per instance.
    cron = await history(stub, cron_id)
    # The first slot after the invocation was made (a slot may pass while it is being made).
    created_ms = (await invocation(stub, cron_id)).creation_time.ToMilliseconds()
    first_slot = (created_ms // 10_000 + 1) * 10_000
    for instance_id in AGENTS:
        times = fire_times(cron, instance_id)[:3]
        for n, fired in enumerate(times):
            assert abs(fired - (first_slot + n * 10_000)) <= TOLERANCE_MS, (n, fired)
        assert [r.repeats for r in cron if r.instance_id == instance_id][:3] == [1, 2, 3]
    # Rate: at once, then every 10 s.
    rate = fire_times(await history(stub, rate_id), "s-1")[:3]
    for n, fired in enumerate(rate):
        assert abs(fired - (rate[0] + n * 10_000)) <= TOLERANCE_MS
    assert abs(rate[0] - started_ms) <= 2 * TOLERANCE_MS
    # At: once, at that time, then the invocation aggregates like a one-shot.
    at_runs = await history(stub, at_id)
    assert len(at_runs) == 1
    assert (
        abs(at_runs[0].creation_time.ToMilliseconds() - at_time.timestamp() * 1000) <= TOLERANCE_MS
    )
    assert (await invocation(stub, at_id)).invoke_status == pb.INVOKE_STATUS_FINISHED

    # Periodic invocations stay Running, with their instances, until stopped.
    for invoke_id in (cron_id, rate_id):
        running = await invocation(stub, invoke_id)
        assert running.invoke_status == pb.INVOKE_STATUS_RUNNING
        assert {m.instance_invoke_status for m in running.invoke_instances} == {
            pb.INVOKE_STATUS_RUNNING
        }
        await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
        await watch(stub, invoke_id)  # ends once every run in flight is over
        stopped = await invocation(stub, invoke_id)
        assert stopped.invoke_status == pb.INVOKE_STATUS_STOPPED
    count = len(await history(stub, cron_id))
    await asyncio.sleep(11)  # a whole period: a stopped schedule must not fire again
    assert len(await history(stub, cron_id)) == count


async def test_preview_gives_the_next_fire_times_and_invokes_refusals(
    stub: Stub, scheduled: Scheduled
) -> None:
    before_ms = int(time.time() * 1000)
    preview = await stub.PreviewSchedule(
        pb.PreviewScheduleRequest(region_id=REGION, frequency="*/10 * * * * ?")
    )
    times = [f.time.ToMilliseconds() for f in preview.fire_times]
    assert len(times) == 5
    assert times[0] > before_ms
    assert all(t % 10_000 == 0 for t in times)
    assert [b - a for a, b in itertools.pairwise(times)] == [10_000] * 4
    assert preview.time_zone == "UTC+08:00"  # the server's default
    assert preview.fire_times[0].local_time.endswith(" +08:00")

    # A refused frequency is refused as InvokeCommand refuses it: code, reason, field, text.
    refusals = []
    for call in (
        stub.PreviewSchedule(
            pb.PreviewScheduleRequest(region_id=REGION, frequency="*/3 * * * * ?")
        ),
        invoke_periodic(stub, "*/3 * * * * ?"),
    ):
        with pytest.raises(aio.AioRpcError) as refused:
            await call
        refusals.append(
            (refused.value.code(), refused.value.details(), *error_details(refused.value))
        )
    assert refusals[0] == refusals[1]
    assert refusals[0][2].reason == "InvalidParam.Frequency"
    assert refusals[0][3] == ["frequency"]

    # A read, not audited; and callers without a key are refused like on any other call.
    async with client_channel(scheduled.server) as channel:
        audit = await admin_pb2_grpc.AdminServiceStub(channel).ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(method=PREVIEW_SCHEDULE)
        )
    assert list(audit.events) == []
    async with aio.insecure_channel(scheduled.server.address) as anonymous:
        with pytest.raises(aio.AioRpcError) as refused:
            await command_pb2_grpc.CommandServiceStub(anonymous).PreviewSchedule(
                pb.PreviewScheduleRequest(region_id=REGION, frequency="rate(5m)")
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_stop_one_instance_ends_its_fires_only(stub: Stub) -> None:
    invoke_id = await invoke_periodic(stub, "rate(10s)")
    await wait_for_runs(stub, invoke_id, 1, AGENTS)
    await stub.StopInvocation(
        pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id, instance_ids=["s-1"])
    )
    await wait_for_runs(stub, invoke_id, 2, ("s-2",))
    runs = await history(stub, invoke_id)
    assert len(fire_times(runs, "s-1")) == 1
    assert len(fire_times(runs, "s-2")) == 2
    members = {m.instance_id: m for m in (await invocation(stub, invoke_id)).invoke_instances}
    assert members["s-1"].instance_invoke_status == pb.INVOKE_STATUS_STOPPED
    assert members["s-2"].instance_invoke_status == pb.INVOKE_STATUS_RUNNING
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    await watch(stub, invoke_id)
    assert (await invocation(stub, invoke_id)).invoke_status == pb.INVOKE_STATUS_STOPPED


async def test_an_instance_still_running_skips_the_next_fire(stub: Stub) -> None:
    # Each run lasts 12 s and the schedule fires every 10 s: the fire 10 s after a run
    # started finds it still going, so that instance skips it; the one after runs.
    invoke_id = await invoke_periodic(
        stub, "*/10 * * * * ?", script=b"sleep 12", instances=("s-1",), timeout_seconds=30
    )
    await wait_for_runs(stub, invoke_id, 2, ("s-1",))
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    times = fire_times(await history(stub, invoke_id), "s-1")
    assert abs(times[1] - times[0] - 20_000) <= TOLERANCE_MS, times


async def test_a_restart_neither_loses_the_schedule_nor_replays_missed_fires(
    stub: Stub, scheduled: Scheduled
) -> None:
    invoke_id = await invoke_periodic(stub, "*/10 * * * * ?", instances=("s-1",))
    await wait_for_runs(stub, invoke_id, 1, ("s-1",))
    first = fire_times(await history(stub, invoke_id), "s-1")[0]

    scheduled.server.stop()
    # Stay down past the next slot and its 2 s grace, so that it is missed, and come back
    # with time to spare before the slot after it.
    await asyncio.sleep(max(0.0, (first + 12_500) / 1000 - time.time()))
    restarted_ms = int(time.time() * 1000)
    scheduled.server.start()

    async with client_channel(scheduled.server) as channel:
        again = command_pb2_grpc.CommandServiceStub(channel)
        await wait_for_runs(again, invoke_id, 2, ("s-1",))
        times = fire_times(await history(again, invoke_id), "s-1")
        await again.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    assert restarted_ms > first + 10_000 + TOLERANCE_MS, "the server was down over a slot"
    # The missed slot (first + 10 s) was not run at restart; the next one ran on time.
    assert abs(times[1] - (first + 20_000)) <= TOLERANCE_MS, (times, restarted_ms)
