"""Targets as users give them: in any order, sometimes the same instance twice. Lists that
make something (an invocation, a file push, more instances for a periodic invocation) refuse
a repeated instance, naming it; lists that select (stop, describe, tag, untag) act once on
each distinct instance."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc, instance_pb2, instance_pb2_grpc
from cloudassist.v1.tag_pb2 import Tag
from tests.integration.helpers import error_details, watch
from tests.integration.user_shaped.conftest import HOME, Fleet
from tests.support import wait_until

SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT
# Prints the instance the server filled in, then the script's own path, which lies in the
# state directory of the agent that runs it: `.../agent-<its instance id>/...`.
WHO = b'echo "{{ACS::InstanceId}} $0"\n'
_RAN_ON = re.compile(rb"^(\S+) \S*/agent-([^/]+)/\S*\n$")


def ran_on(output: bytes) -> tuple[str, str]:
    """(the instance the script was meant for, the agent that ran it)."""
    match = _RAN_ON.fullmatch(output)
    assert match, output
    return match.group(1).decode(), match.group(2).decode()


async def all_results(
    stub: command_pb2_grpc.CommandServiceAsyncStub, page_size: int = 50, **filters: Any
) -> list[pb.InvocationResult]:
    """Every result of the filters, page after page."""
    found: list[pb.InvocationResult] = []
    token = ""
    while True:
        page = await stub.DescribeInvocationResults(
            pb.DescribeInvocationResultsRequest(
                region_id=HOME, page_size=page_size, page_token=token, **filters
            )
        )
        found += page.invocation_results
        token = page.next_page_token
        if not token:
            return found


async def invoke_unsorted(
    stub: command_pb2_grpc.CommandServiceAsyncStub, targets: list[str]
) -> str:
    created = await stub.CreateCommand(
        pb.CreateCommandRequest(
            region_id=HOME, name="who", type=SHELL, command_content=WHO, enable_parameter=True
        )
    )
    invoked = await stub.InvokeCommand(
        pb.InvokeCommandRequest(region_id=HOME, command_id=created.command_id, instance_ids=targets)
    )
    return invoked.invoke_id


async def run_unsorted(stub: command_pb2_grpc.CommandServiceAsyncStub, targets: list[str]) -> str:
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=HOME,
            type=SHELL,
            command_content=WHO,
            enable_parameter=True,
            instance_ids=targets,
        )
    )
    return ran.invoke_id


@pytest.mark.parametrize("start", [invoke_unsorted, run_unsorted], ids=["invoke", "run"])
@pytest.mark.parametrize("targets", [["u-c", "u-a", "u-b"], ["u-b", "u-c", "u-a"]])
async def test_unsorted_targets_run_once_each_on_their_own_instance(
    admin: aio.Channel,
    start: Callable[[command_pb2_grpc.CommandServiceAsyncStub, list[str]], Awaitable[str]],
    targets: list[str],
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    invoke_id = await start(stub, targets)
    seen = await watch(stub, invoke_id, HOME)
    assert {i: ran_on(bytes(out)) for i, out in seen.output.items()} == {i: (i, i) for i in targets}
    results = await all_results(stub, invoke_id=invoke_id)
    assert sorted(r.instance_id for r in results) == sorted(targets), "one record each"
    assert {r.instance_id: r.state for r in results} == dict.fromkeys(
        targets, pb.EXECUTION_STATE_SUCCESS
    )
    for result in results:
        assert ran_on(result.output) == (result.instance_id, result.instance_id)
    listed = await stub.DescribeInvocations(
        pb.DescribeInvocationsRequest(region_id=HOME, invoke_id=invoke_id)
    )
    assert sorted(i.instance_id for i in listed.invocations[0].invoke_instances) == sorted(targets)


DUPLICATES = ["u-b", "u-a", "u-b"]
REFUSALS: list[tuple[str, str, Callable[[str], Any]]] = [
    (
        "invoke",
        "InvokeCommand",
        lambda command_id: pb.InvokeCommandRequest(
            region_id=HOME, command_id=command_id, instance_ids=DUPLICATES
        ),
    ),
    (
        "invoke-dry-run",
        "InvokeCommand",
        lambda command_id: pb.InvokeCommandRequest(
            region_id=HOME, command_id=command_id, instance_ids=DUPLICATES, dry_run=True
        ),
    ),
    (
        "run-keeping-the-command",
        "RunCommand",
        lambda _: pb.RunCommandRequest(
            region_id=HOME,
            type=SHELL,
            command_content=b"echo twice?",
            instance_ids=DUPLICATES,
            keep_command=True,
        ),
    ),
    (
        "send-file",
        "SendFile",
        lambda _: pb.SendFileRequest(
            region_id=HOME,
            name="twice.txt",
            target_dir="/tmp",
            content=b"x",
            instance_ids=DUPLICATES,
        ),
    ),
]


@pytest.mark.parametrize(("rpc", "build"), [pytest.param(*r[1:], id=r[0]) for r in REFUSALS])
async def test_an_instance_named_twice_is_refused_naming_it_and_nothing_is_made(
    fleet: Fleet, admin: aio.Channel, rpc: str, build: Callable[[str], Any]
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    created = await stub.CreateCommand(
        pb.CreateCommandRequest(region_id=HOME, name="once", type=SHELL, command_content=b"true")
    )
    before = fleet.server.resource_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await getattr(stub, rpc)(build(created.command_id))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields = error_details(caught.value)
    assert (info.reason, fields) == ("InvalidParameter.InstanceIds", ["instance_ids"])
    assert info.metadata["instance_id"] == "u-b"
    assert "'u-b' is listed twice" in (caught.value.details() or "")
    assert fleet.server.resource_counts() == before


async def test_adding_an_instance_twice_to_a_periodic_invocation_is_refused(
    fleet: Fleet, admin: aio.Channel
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=HOME,
            type=SHELL,
            command_content=b"true",
            instance_ids=["u-b"],
            repeat_mode=pb.REPEAT_MODE_PERIOD,
            frequency="rate(1h)",
        )
    )
    try:
        with pytest.raises(aio.AioRpcError) as caught:
            await stub.ModifyInvocationAttribute(
                pb.ModifyInvocationAttributeRequest(
                    region_id=HOME, invoke_id=ran.invoke_id, instance_ids=["u-c", "u-a", "u-c"]
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        info, fields = error_details(caught.value)
        assert (info.reason, fields) == ("InvalidParameter.InstanceIds", ["instance_ids"])
        assert "'u-c'" in (caught.value.details() or "")
        # Unsorted and distinct: both join.
        await stub.ModifyInvocationAttribute(
            pb.ModifyInvocationAttributeRequest(
                region_id=HOME, invoke_id=ran.invoke_id, instance_ids=["u-c", "u-a"]
            )
        )
        listed = await stub.DescribeInvocations(
            pb.DescribeInvocationsRequest(region_id=HOME, invoke_id=ran.invoke_id)
        )
        members = [i.instance_id for i in listed.invocations[0].invoke_instances]
        assert sorted(members) == ["u-a", "u-b", "u-c"]
    finally:
        await stub.StopInvocation(pb.StopInvocationRequest(region_id=HOME, invoke_id=ran.invoke_id))


async def test_stopping_unsorted_and_repeated_instances_stops_each_once(
    fleet: Fleet, admin: aio.Channel
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=HOME,
            type=SHELL,
            command_content=b"echo started; exec sleep 60",
            instance_ids=["u-c", "u-a", "u-b"],
        )
    )
    invoke_id = ran.invoke_id
    sync = fleet.server.sync_channel()
    sync_stub = command_pb2_grpc.CommandServiceStub(sync)

    def states() -> dict[str, int]:
        page = sync_stub.DescribeInvocationResults(
            pb.DescribeInvocationResultsRequest(region_id=HOME, invoke_id=invoke_id),
            metadata=tuple(fleet.server.metadata),
        )
        return {r.instance_id: r.state for r in page.invocation_results}

    try:
        wait_until(
            lambda: set(states().values()) == {pb.EXECUTION_STATE_RUNNING},
            30,
            "every record to run",
        )
        await stub.StopInvocation(
            pb.StopInvocationRequest(
                region_id=HOME, invoke_id=invoke_id, instance_ids=["u-b", "u-a", "u-b"]
            )
        )
        wait_until(
            lambda: (
                {i: s for i, s in states().items() if i != "u-c"}
                == {"u-a": pb.EXECUTION_STATE_TERMINATED, "u-b": pb.EXECUTION_STATE_TERMINATED}
            ),
            30,
            "u-a and u-b to end",
        )
        assert states()["u-c"] == pb.EXECUTION_STATE_RUNNING, "the one not named runs on"
        results = await all_results(stub, invoke_id=invoke_id, include_history=True)
        assert sorted(r.instance_id for r in results) == ["u-a", "u-b", "u-c"]
    finally:
        await stub.StopInvocation(pb.StopInvocationRequest(region_id=HOME, invoke_id=invoke_id))
        sync.close()
    seen = await watch(stub, invoke_id, HOME)
    assert {i: s.state for i, s in seen.states.items()} == dict.fromkeys(
        ["u-a", "u-b", "u-c"], pb.EXECUTION_STATE_TERMINATED
    )


async def test_describe_instances_lists_each_named_instance_once_across_pages(
    admin: aio.Channel,
) -> None:
    stub = instance_pb2_grpc.InstanceServiceStub(admin)
    wanted = ["u-b", "u-a", "u-b", "u-nope", "u-c"]
    whole = await stub.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=HOME, instance_ids=wanted)
    )
    assert sorted(i.instance_id for i in whole.instances) == ["u-a", "u-b", "u-c"]
    assert whole.total_count == 3
    paged: list[str] = []
    token = ""
    while True:
        page = await stub.DescribeInstances(
            instance_pb2.DescribeInstancesRequest(
                region_id=HOME, instance_ids=wanted, page_size=1, page_token=token
            )
        )
        assert page.total_count == 3
        paged += [i.instance_id for i in page.instances]
        token = page.next_page_token
        if not token:
            break
    # Newest registration first: the agents registered as u-c, u-a, u-b.
    assert paged == ["u-b", "u-a", "u-c"]


async def test_tagging_and_untagging_repeated_instances_acts_once_on_each(
    fleet: Fleet, admin: aio.Channel
) -> None:
    instances = instance_pb2_grpc.InstanceServiceStub(admin)
    stub = command_pb2_grpc.CommandServiceStub(admin)
    await instances.TagInstances(
        instance_pb2.TagInstancesRequest(
            region_id=HOME, instance_ids=["u-c", "u-a", "u-c"], tags=[Tag(key="dup", value="1")]
        )
    )
    rows = fleet.server.query(
        "SELECT instance_id, count(*) FROM instance_tags WHERE key = 'dup' GROUP BY instance_id"
    )
    assert sorted(rows) == [("u-a", 1), ("u-c", 1)]
    tagged = await instances.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=HOME, tags=[Tag(key="dup", value="1")])
    )
    assert sorted(i.instance_id for i in tagged.instances) == ["u-a", "u-c"]
    # Selected by the tag, they run once each, on their own instance.
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=HOME,
            type=SHELL,
            command_content=WHO,
            enable_parameter=True,
            resource_tags=[Tag(key="dup", value="1")],
        )
    )
    seen = await watch(stub, ran.invoke_id, HOME)
    assert {i: ran_on(bytes(o)) for i, o in seen.output.items()} == {
        "u-a": ("u-a", "u-a"),
        "u-c": ("u-c", "u-c"),
    }
    # A key named twice in one untag is refused, naming the field; nothing is removed.
    with pytest.raises(aio.AioRpcError) as caught:
        await instances.UntagInstances(
            instance_pb2.UntagInstancesRequest(
                region_id=HOME, instance_ids=["u-a"], keys=["dup", "dup"]
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[1] == ["keys"]
    await instances.UntagInstances(
        instance_pb2.UntagInstancesRequest(
            region_id=HOME, instance_ids=["u-a", "u-c", "u-a"], keys=["dup"]
        )
    )
    assert fleet.server.query("SELECT count(*) FROM instance_tags WHERE key = 'dup'") == [(0,)]


async def test_results_filtered_by_instance_and_paged_show_each_record_once(
    admin: aio.Channel,
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    invoke_id = await run_unsorted(stub, ["u-c", "u-a", "u-b"])
    await watch(stub, invoke_id, HOME)
    for instance_id in ("u-b", "u-c", "u-a"):
        only = await all_results(stub, invoke_id=invoke_id, instance_id=instance_id)
        assert [r.instance_id for r in only] == [instance_id]
        assert ran_on(only[0].output) == (instance_id, instance_id)
        invocations = await stub.DescribeInvocations(
            pb.DescribeInvocationsRequest(region_id=HOME, instance_id=instance_id, page_size=50)
        )
        assert invoke_id in {i.invoke_id for i in invocations.invocations}
    paged = await all_results(stub, page_size=1, invoke_id=invoke_id)
    assert sorted(r.instance_id for r in paged) == ["u-a", "u-b", "u-c"]
    assert len({r.record_id for r in paged}) == 3
