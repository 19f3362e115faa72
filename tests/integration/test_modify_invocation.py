"""ModifyInvocationAttribute: a periodic invocation changed while it runs, nothing stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import REGION, error_details, read_output, watch
from tests.support import AgentProcess, ServerProcess, client_channel

Stub = command_pb2_grpc.CommandServiceStub
SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT


@dataclass
class Periodic:
    server: ServerProcess
    command_id: str  # "echo {{who}}" with parameters


@pytest.fixture(scope="module")
def periodic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Periodic]:
    workdir = tmp_path_factory.mktemp("modify")
    server = ServerProcess(workdir / "server", "--min-timeout", "1")
    agents = [AgentProcess(server, i, workdir) for i in ("m-1", "m-2")]
    server.start()
    try:
        for agent in agents:
            agent.start()
        with grpc.insecure_channel(server.address) as channel:
            created = command_pb2_grpc.CommandServiceStub(channel).CreateCommand(
                pb.CreateCommandRequest(
                    region_id=REGION,
                    name="greet",
                    type=SHELL,
                    command_content=b"echo {{who}}",
                    enable_parameter=True,
                    timeout_seconds=5,
                ),
                metadata=server.metadata,
            )
        yield Periodic(server, created.command_id)
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


@pytest.fixture
async def stub(periodic: Periodic) -> AsyncIterator[Stub]:
    async with client_channel(periodic.server) as channel:
        yield command_pb2_grpc.CommandServiceStub(channel)


async def _invoke(stub: Stub, periodic: Periodic, frequency: str = "rate(10s)") -> str:
    invoked = await stub.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=REGION,
            command_id=periodic.command_id,
            instance_ids=["m-1"],
            parameters={"who": "first"},
            repeat_mode=pb.REPEAT_MODE_PERIOD,
            frequency=frequency,
        )
    )
    return invoked.invoke_id


async def _next_runs(
    stub: Stub, invoke_id: str, instances: set[str], old: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Follows the invocation until each of `instances` has a finished run whose record is
    not in `old`; returns the record id of each."""
    done: dict[str, str] = {}
    stream = stub.WatchInvocation(pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    async for event in stream:
        change = event.state_change
        if not event.HasField("state_change") or change.record_id in old:
            continue
        if change.state == pb.EXECUTION_STATE_SUCCESS and change.instance_id in instances:
            done[change.instance_id] = change.record_id
            if set(done) == instances:
                stream.cancel()
                break
    return done


async def test_the_next_fire_runs_the_new_script_on_the_added_instance(
    stub: Stub, periodic: Periodic
) -> None:
    invoke_id = await _invoke(stub, periodic)
    (first,) = (await _next_runs(stub, invoke_id, {"m-1"})).values()
    await stub.ModifyInvocationAttribute(
        pb.ModifyInvocationAttributeRequest(
            region_id=REGION,
            invoke_id=invoke_id,
            command_content=b"echo {{who}} changed",
            parameters={"who": "second"},
            replace_parameters=True,
            instance_ids=["m-2"],
        )
    )
    described = await stub.DescribeInvocations(
        pb.DescribeInvocationsRequest(region_id=REGION, invoke_id=invoke_id)
    )
    invocation = described.invocations[0]
    assert invocation.invoke_status == pb.INVOKE_STATUS_RUNNING
    assert dict(invocation.parameters) == {"who": "second"}
    assert sorted(i.instance_id for i in invocation.invoke_instances) == ["m-1", "m-2"]

    # The next fire: the new script and values, on both instances.
    later = await _next_runs(stub, invoke_id, {"m-1", "m-2"}, old=frozenset({first}))
    for instance_id, record_id in later.items():
        result = await stub.DescribeInvocationResults(
            pb.DescribeInvocationResultsRequest(
                region_id=REGION, invoke_id=invoke_id, include_history=True, page_size=50
            )
        )
        (record,) = [r for r in result.invocation_results if r.record_id == record_id]
        assert record.output == b"second changed\n", instance_id
    stored, _ = await read_output(stub, invoke_id, "m-1")
    assert stored == b"second changed\n", "the latest run of m-1"
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    await watch(stub, invoke_id)


async def test_a_new_frequency_moves_the_next_fire(stub: Stub, periodic: Periodic) -> None:
    invoke_id = await _invoke(stub, periodic, frequency="0 0 0 1 1 ? 2040")
    before = periodic.server.query(
        f"SELECT next_fire_ms FROM invocations WHERE invoke_id = '{invoke_id}'"
    )
    await stub.ModifyInvocationAttribute(
        pb.ModifyInvocationAttributeRequest(
            region_id=REGION, invoke_id=invoke_id, frequency="0 0 0 1 1 ? 2039"
        )
    )
    after = periodic.server.query(
        f"SELECT next_fire_ms, frequency FROM invocations WHERE invoke_id = '{invoke_id}'"
    )
    assert after[0][1] == "0 0 0 1 1 ? 2039"
    assert after[0][0] < before[0][0]
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))


@pytest.mark.parametrize(
    ("fields", "code", "reason", "field"),
    [
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "MissingParameter.Modification", "invoke_id"),
        ({"instance_ids": ["m-1"]}, grpc.StatusCode.INVALID_ARGUMENT,
         "InvalidParameter.InstanceIds", "instance_ids"),
        ({"instance_ids": ["m-nope"]}, grpc.StatusCode.NOT_FOUND,
         "InvalidInstance.NotFound", "instance_ids"),
        ({"parameters": {"who": "x"}}, grpc.StatusCode.INVALID_ARGUMENT,
         "InvalidParameter.ReplaceParameters", "replace_parameters"),
        ({"parameters": {"nobody": "x"}, "replace_parameters": True},
         grpc.StatusCode.INVALID_ARGUMENT, "Parameter.MissingValue", "parameters"),
        ({"frequency": "rate(1s)"}, grpc.StatusCode.INVALID_ARGUMENT,
         "InvalidParam.Frequency", "frequency"),
    ],
)  # fmt: skip
async def test_bad_changes_are_refused_and_change_nothing(
    stub: Stub,
    periodic: Periodic,
    fields: dict[str, object],
    code: grpc.StatusCode,
    reason: str,
    field: str,
) -> None:
    invoke_id = await _invoke(stub, periodic, frequency="0 0 0 1 1 ? 2040")
    query = (
        "SELECT content, parameters, frequency, next_fire_ms FROM invocations "
        f"WHERE invoke_id = '{invoke_id}'"
    )
    before = (periodic.server.query(query), periodic.server.row_counts())
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.ModifyInvocationAttribute(
            pb.ModifyInvocationAttributeRequest(region_id=REGION, invoke_id=invoke_id, **fields)  # type: ignore[arg-type]
        )
    assert caught.value.code() == code
    info, fields_named = error_details(caught.value)
    assert (info.reason, fields_named) == (reason, [field])
    assert (periodic.server.query(query), periodic.server.row_counts()) == before
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))


async def test_only_a_periodic_invocation_that_still_fires_can_change(
    stub: Stub, periodic: Periodic
) -> None:
    once = await stub.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=REGION,
            command_id=periodic.command_id,
            instance_ids=["m-1"],
            parameters={"who": "once"},
        )
    )
    await watch(stub, once.invoke_id)
    stopped = await _invoke(stub, periodic, frequency="0 0 0 1 1 ? 2040")
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=stopped))
    for invoke_id, reason in (
        (once.invoke_id, "InvalidRepeatMode.NotPeriod"),
        (stopped, "InvalidStatus.Invocation"),
    ):
        with pytest.raises(aio.AioRpcError) as caught:
            await stub.ModifyInvocationAttribute(
                pb.ModifyInvocationAttributeRequest(
                    region_id=REGION, invoke_id=invoke_id, frequency="rate(1h)"
                )
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_details(caught.value)[0].reason == reason
