"""Command API behaviour beyond running scripts: idempotency, pagination, modify, delete."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.conftest import Cluster
from tests.integration.helpers import REGION, error_details, invocation, watch

Stub = command_pb2_grpc.CommandServiceStub
SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT


def command(region: str = REGION, **fields: object) -> pb.CreateCommandRequest:
    defaults: dict[str, object] = {
        "region_id": region,
        "name": "n",
        "type": SHELL,
        "command_content": b"echo hi",
    }
    return pb.CreateCommandRequest(**{**defaults, **fields})  # type: ignore[arg-type]


async def test_create_command_with_a_client_token_is_idempotent(
    stub: Stub, cluster: Cluster
) -> None:
    request = command(name="idem", client_token="token-create-1")
    first = await stub.CreateCommand(request)
    before = cluster.server.row_counts()
    again = await stub.CreateCommand(request)
    assert again.command_id == first.command_id
    assert cluster.server.row_counts() == before

    with pytest.raises(aio.AioRpcError) as caught:
        await stub.CreateCommand(command(name="different", client_token="token-create-1"))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(caught.value)[0].reason == "IdempotentParameterMismatch"
    assert cluster.server.row_counts() == before


async def test_invoke_and_run_with_a_client_token_run_once(stub: Stub, cluster: Cluster) -> None:
    created = await stub.CreateCommand(command(name="idem-invoke"))
    request = pb.InvokeCommandRequest(
        region_id=REGION,
        command_id=created.command_id,
        instance_ids=["i-a"],
        client_token="token-invoke-1",
    )
    first = await stub.InvokeCommand(request)
    await watch(stub, first.invoke_id)
    before = cluster.server.row_counts()
    again = await stub.InvokeCommand(request)
    assert again.invoke_id == first.invoke_id
    assert cluster.server.row_counts() == before
    different = pb.InvokeCommandRequest()
    different.CopyFrom(request)
    different.instance_ids[:] = ["i-b"]
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.InvokeCommand(different)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(caught.value)[0].reason == "IdempotentParameterMismatch"
    assert cluster.server.row_counts() == before

    run = pb.RunCommandRequest(
        region_id=REGION,
        type=SHELL,
        command_content=b"echo once",
        instance_ids=["i-b"],
        client_token="token-run-1",
    )
    ran = await stub.RunCommand(run)
    ran_again = await stub.RunCommand(run)
    assert (ran_again.command_id, ran_again.invoke_id) == (ran.command_id, ran.invoke_id)
    run.command_content = b"echo twice"
    await watch(stub, ran.invoke_id)  # its output is stored: the counts below hold still
    before = cluster.server.row_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.RunCommand(run)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_details(caught.value)[0].reason == "IdempotentParameterMismatch"
    assert cluster.server.row_counts() == before


async def test_pages_are_newest_first_and_stable(stub: Stub) -> None:
    region = "cn-pages"
    ids = [(await stub.CreateCommand(command(region, name=f"p{n}"))).command_id for n in range(12)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.DescribeCommands(
            pb.DescribeCommandsRequest(region_id=region, page_size=5, page_token=token)
        )
        assert page.total_count == 12
        seen += [c.command_id for c in page.commands]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(ids))

    first = await stub.DescribeCommands(pb.DescribeCommandsRequest(region_id=region, page_size=5))
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.DescribeCommands(
            pb.DescribeCommandsRequest(
                region_id=region, name="p1", page_size=5, page_token=first.next_page_token
            )
        )
    assert error_details(caught.value)[0].reason == "InvalidParameter.PageToken"
    default = await stub.DescribeCommands(pb.DescribeCommandsRequest(region_id=region))
    assert len(default.commands) == 10


async def test_modify_changes_only_what_is_set(stub: Stub) -> None:
    created = await stub.CreateCommand(
        command(name="m", description="keep", timeout_seconds=30, working_dir="/tmp")
    )
    await stub.ModifyCommand(
        pb.ModifyCommandRequest(
            region_id=REGION, command_id=created.command_id, name="m2", timeout_seconds=45
        )
    )
    listed = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, command_id=created.command_id)
    )
    modified = listed.commands[0]
    assert (modified.name, modified.timeout_seconds) == ("m2", 45)
    assert (modified.description, modified.working_dir) == ("keep", "/tmp")
    assert modified.command_content == b"echo hi"


async def test_deleting_a_command_keeps_its_invocations(stub: Stub) -> None:
    created = await stub.CreateCommand(command(name="gone", command_content=b"echo kept"))
    invoked = await stub.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=REGION, command_id=created.command_id, instance_ids=["i-c"]
        )
    )
    await watch(stub, invoked.invoke_id)
    await stub.DeleteCommand(
        pb.DeleteCommandRequest(region_id=REGION, command_id=created.command_id)
    )
    kept = await invocation(stub, invoked.invoke_id)
    assert kept.command_name == "gone"
    assert kept.command_content == b"echo kept"
    assert kept.invoke_status == pb.INVOKE_STATUS_FINISHED


async def test_run_command_without_keep_saves_no_command(stub: Stub) -> None:
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=REGION, type=SHELL, command_content=b"echo x", instance_ids=["i-a"]
        )
    )
    listed = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, command_id=ran.command_id)
    )
    assert list(listed.commands) == []
    kept = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=REGION,
            type=SHELL,
            command_content=b"echo x",
            instance_ids=["i-a"],
            keep_command=True,
            name="kept",
        )
    )
    listed = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, command_id=kept.command_id)
    )
    assert [c.name for c in listed.commands] == ["kept"]
    assert listed.commands[0].invoke_times == 1


async def test_filters_on_invocations_and_results(stub: Stub) -> None:
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=REGION,
            type=SHELL,
            command_content=b"test {{ACS::InstanceId}} = i-a",
            enable_parameter=True,
            instance_ids=["i-a", "i-b"],
        )
    )
    await watch(stub, ran.invoke_id)
    overall = await invocation(stub, ran.invoke_id)
    assert overall.invoke_status == pb.INVOKE_STATUS_FINISHED
    finished = await stub.DescribeInvocationResults(
        pb.DescribeInvocationResultsRequest(
            region_id=REGION,
            invoke_id=ran.invoke_id,
            invoke_record_status=pb.INVOKE_STATUS_FINISHED,
        )
    )
    assert finished.total_count == 2
    on_b = await stub.DescribeInvocations(
        pb.DescribeInvocationsRequest(
            region_id=REGION, instance_id="i-b", command_id=ran.command_id
        )
    )
    assert [i.invoke_id for i in on_b.invocations] == [ran.invoke_id]
    failed = await stub.DescribeInvocations(
        pb.DescribeInvocationsRequest(
            region_id=REGION, command_id=ran.command_id, invoke_status=pb.INVOKE_STATUS_FAILED
        )
    )
    assert list(failed.invocations) == []


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        # region_id (field 1) with bytes that are not UTF-8
        ("DescribeCommands", b"\x0a\x02\xff\xfe"),
        # a length that runs past the end of the message
        ("CreateCommand", b"\x0a\x50abc"),
    ],
)
async def test_a_request_that_does_not_parse_is_invalid_argument(
    channel: aio.Channel, method: str, raw: bytes
) -> None:
    call = channel.unary_unary(
        f"/cloudassist.v1.CommandService/{method}",
        request_serializer=lambda request: request,
        response_deserializer=lambda response: response,
    )
    with pytest.raises(aio.AioRpcError) as caught:
        await call(raw)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0].reason == "InvalidParameter.Malformed"


async def test_watch_of_an_unknown_invocation_is_not_found(stub: Stub) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in stub.WatchInvocation(
            pb.WatchInvocationRequest(region_id=REGION, invoke_id="t-nope")
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(caught.value)[0].reason == "InvalidInvokeId.NotFound"


async def test_a_dry_run_shows_what_would_run_and_creates_nothing(
    stub: Stub, cluster: Cluster
) -> None:
    created = await stub.CreateCommand(
        command(
            name="dry",
            command_content=b"echo {{who}} on {{ACS::InstanceId}}",
            enable_parameter=True,
            timeout_seconds=30,
        )
    )
    marker = cluster.workdir / "dry-run-ran"
    before = cluster.server.resource_counts()
    response = await stub.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=REGION,
            command_id=created.command_id,
            instance_ids=["i-a", "i-b"],
            parameters={"who": "nobody"},
            env={"MODE": "dry"},
            client_token="token-dry-1",
            dry_run=True,
        )
    )
    assert response.invoke_id == ""
    tasks = {t.instance_id: t for t in response.dry_run.tasks}
    assert set(tasks) == {"i-a", "i-b"}
    for instance_id, task in tasks.items():
        assert task.script == f"echo nobody on {instance_id}".encode()
        assert task.online
        assert task.timeout_seconds == 30
        assert dict(task.env) == {"MODE": "dry"}
    assert not response.dry_run.HasField("first_fire_time")
    assert cluster.server.resource_counts() == before

    # RunCommand too: no command kept, no invocation, nothing runs on the agent.
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=REGION,
            type=SHELL,
            command_content=f"touch {marker}".encode(),
            instance_ids=["i-c"],
            keep_command=True,
            repeat_mode=pb.REPEAT_MODE_PERIOD,
            frequency="rate(1h)",
            dry_run=True,
        )
    )
    assert (ran.command_id, ran.invoke_id) == ("", "")
    assert [t.instance_id for t in ran.dry_run.tasks] == ["i-c"]
    assert ran.dry_run.first_fire_time.seconds > 0
    assert cluster.server.resource_counts() == before
    # The token of the dry run was not taken: a real invocation may use it.
    real = await stub.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=REGION,
            command_id=created.command_id,
            instance_ids=["i-a"],
            parameters={"who": "somebody"},
            client_token="token-dry-1",
        )
    )
    seen = await watch(stub, real.invoke_id)
    assert bytes(seen.output["i-a"]) == b"somebody on i-a\n"
    assert not marker.exists()


async def test_a_dry_run_is_refused_like_the_real_thing(stub: Stub, cluster: Cluster) -> None:
    created = await stub.CreateCommand(command(name="dry-refused"))
    before = cluster.server.resource_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.InvokeCommand(
            pb.InvokeCommandRequest(
                region_id=REGION,
                command_id=created.command_id,
                instance_ids=["i-a", "i-nope"],
                dry_run=True,
            )
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(caught.value)[0].reason == "InvalidInstance.NotFound"
    assert cluster.server.resource_counts() == before
