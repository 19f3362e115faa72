"""Rate control with real agents: max_concurrency holds targets back, max_errors stops the
rest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import REGION, error_details, invocation, results, run, watch
from tests.support import AgentProcess, ServerProcess, client_channel

Stub = command_pb2_grpc.CommandServiceStub
TARGETS = ["r-1", "r-2", "r-3", "r-4"]


@dataclass
class Fleet:
    server: ServerProcess


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("rate")
    server = ServerProcess(workdir / "server", "--min-timeout", "1")
    agents = [AgentProcess(server, i, workdir) for i in TARGETS]
    server.start()
    try:
        for agent in agents:
            agent.start()
        yield Fleet(server)
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


@pytest.fixture
async def stub(fleet: Fleet) -> AsyncIterator[Stub]:
    async with client_channel(fleet.server) as channel:
        yield command_pb2_grpc.CommandServiceStub(channel)


async def test_no_more_than_max_concurrency_run_at_once(stub: Stub) -> None:
    invoke_id = await run(stub, "sleep 0.5; echo done", TARGETS, max_concurrency="50%")
    seen = await watch(stub, invoke_id)
    assert {i: s.state for i, s in seen.states.items()} == dict.fromkeys(
        TARGETS, pb.EXECUTION_STATE_SUCCESS
    )
    assert (await invocation(stub, invoke_id)).max_concurrency == "2"
    # At every moment at most two records were running: count the overlaps of their spans.
    by_instance = await results(stub, invoke_id)
    spans = [
        (r.start_time.ToMilliseconds(), r.finish_time.ToMilliseconds())
        for r in by_instance.values()
    ]
    for start, _ in spans:
        running = sum(1 for s, f in spans if s <= start < f)
        assert running <= 2, spans
    # The held ones started only once the first ones had ended.
    ends = sorted(f for _, f in spans)
    assert sorted(s for s, _ in spans)[2] >= ends[0], spans


async def test_the_error_budget_cancels_the_targets_still_waiting(stub: Stub) -> None:
    invoke_id = await run(stub, "echo trying; exit 1", TARGETS, max_concurrency="1", max_errors="1")
    seen = await watch(stub, invoke_id)
    states = sorted(s.state for s in seen.states.values())
    assert states == sorted([pb.EXECUTION_STATE_FAILED] * 2 + [pb.EXECUTION_STATE_CANCELLED] * 2), (
        "two errors exceed max_errors 1; the two still waiting never ran"
    )
    cancelled = [s for s in seen.states.values() if s.state == pb.EXECUTION_STATE_CANCELLED]
    assert {s.error_code for s in cancelled} == {"MaxErrorsExceeded"}
    assert all(s.instance_id not in seen.output for s in cancelled), "they printed nothing"


async def test_a_stop_cancels_the_held_targets_too(stub: Stub) -> None:
    invoke_id = await run(stub, "echo started; sleep 30", TARGETS, max_concurrency="1")
    stream = stub.WatchInvocation(pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    async for event in stream:
        if event.HasField("output"):
            stream.cancel()
            break
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    seen = await watch(stub, invoke_id)
    states = sorted(s.state for s in seen.states.values())
    assert states == sorted([pb.EXECUTION_STATE_TERMINATED] + [pb.EXECUTION_STATE_CANCELLED] * 3)


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"max_concurrency": "0"}, "InvalidParameter.MaxConcurrency", "max_concurrency"),
        ({"max_errors": "lots"}, "InvalidParameter.MaxErrors", "max_errors"),
        (
            {"max_concurrency": "1", "repeat_mode": pb.REPEAT_MODE_PERIOD,
             "frequency": "rate(1h)"},
            "InvalidParameter.MaxConcurrency",
            "max_concurrency",
        ),
    ],
)  # fmt: skip
async def test_bad_rate_control_is_refused(
    stub: Stub, fleet: Fleet, fields: dict[str, object], reason: str, field: str
) -> None:
    before = fleet.server.row_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await run(stub, "true", TARGETS, **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields_named = error_details(caught.value)
    assert (info.reason, fields_named) == (reason, [field])
    assert fleet.server.row_counts() == before
