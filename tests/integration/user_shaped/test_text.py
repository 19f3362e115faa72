"""Text as users type it: not ASCII, at the length limits counted in characters, scripts
written with CRLF line ends or without a last newline, output without a final newline."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc, instance_pb2, instance_pb2_grpc
from cloudassist.v1.tag_pb2 import Tag
from tests.integration.helpers import error_details, watch
from tests.integration.user_shaped.conftest import HOME, Fleet
from tests.integration.user_shaped.test_targets import all_results

SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT
NAME = "部署 — Grüße ✓"
DESCRIPTION = "Prüft die Größe.\n检查大小。\tß"
WHO = "Grüße, 世界"
TAG = Tag(key="团队", value="运维 ü")
# Prints the parameter and where it runs, then a line without a final newline.
SCRIPT = 'printf "%s|%s\\n" "{{who}}" "$(pwd)"\nprintf "ünïcode ✓ 🚀"'.encode()


def working_dir(fleet: Fleet) -> Path:
    path = fleet.workdir / "工作 dir ü"
    path.mkdir(exist_ok=True)
    return path


async def test_a_command_in_any_script_round_trips_and_runs_byte_exact(
    fleet: Fleet, admin: aio.Channel
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    wd = str(working_dir(fleet))
    created = await stub.CreateCommand(
        pb.CreateCommandRequest(
            region_id=HOME, name=NAME, description=DESCRIPTION, type=SHELL,
            command_content=SCRIPT, enable_parameter=True, working_dir=wd, tags=[TAG],
        )
    )  # fmt: skip
    by_name = await stub.DescribeCommands(pb.DescribeCommandsRequest(region_id=HOME, name=NAME))
    by_tag = await stub.DescribeCommands(pb.DescribeCommandsRequest(region_id=HOME, tags=[TAG]))
    for listed in (by_name, by_tag):
        assert [c.command_id for c in listed.commands] == [created.command_id]
    command = by_name.commands[0]
    assert (command.name, command.description, command.working_dir) == (NAME, DESCRIPTION, wd)
    assert command.command_content == SCRIPT
    assert [(t.key, t.value) for t in command.tags] == [(TAG.key, TAG.value)]
    assert list(command.parameter_names) == ["who"]

    invoked = await stub.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=HOME, command_id=created.command_id, instance_ids=["u-c", "u-a"],
            parameters={"who": WHO},
        )
    )  # fmt: skip
    seen = await watch(stub, invoked.invoke_id, HOME)
    expected = f"{WHO}|{wd}\nünïcode ✓ 🚀".encode()
    assert seen.output == {"u-c": expected, "u-a": expected}
    for result in await all_results(stub, invoke_id=invoked.invoke_id):
        assert (result.state, result.output) == (pb.EXECUTION_STATE_SUCCESS, expected)
        stored = await stub.GetInvocationOutput(
            pb.GetInvocationOutputRequest(
                region_id=HOME, invoke_id=invoked.invoke_id, instance_id=result.instance_id
            )
        )
        assert stored.data == expected
    invocation = (
        await stub.DescribeInvocations(
            pb.DescribeInvocationsRequest(region_id=HOME, command_name=NAME)
        )
    ).invocations[0]
    assert invocation.invoke_id == invoked.invoke_id
    assert (invocation.command_name, dict(invocation.parameters)) == (NAME, {"who": WHO})
    assert invocation.working_dir == wd


@pytest.mark.parametrize("char", ["é", "世", "🚀"], ids=["latin", "cjk", "emoji"])
async def test_limits_count_characters_not_bytes(
    fleet: Fleet, admin: aio.Channel, char: str
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    instances = instance_pb2_grpc.InstanceServiceStub(admin)
    name, description = char * 128, char * 512
    created = await stub.CreateCommand(
        pb.CreateCommandRequest(
            region_id=HOME, name=name, description=description, type=SHELL,
            command_content=b"true", tags=[Tag(key=char * 128, value=char * 128)],
        )
    )  # fmt: skip
    listed = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=HOME, command_id=created.command_id)
    )
    command = listed.commands[0]
    assert (command.name, command.description) == (name, description)
    assert [(t.key, t.value) for t in command.tags] == [(char * 128, char * 128)]
    invoked = await stub.InvokeCommand(
        pb.InvokeCommandRequest(region_id=HOME, command_id=created.command_id, instance_ids=["u-b"])
    )
    await watch(stub, invoked.invoke_id, HOME)
    invocation = await stub.DescribeInvocations(
        pb.DescribeInvocationsRequest(region_id=HOME, invoke_id=invoked.invoke_id)
    )
    assert invocation.invocations[0].command_name == name
    key = f"{char}-key" + char * 120
    await instances.TagInstances(
        instance_pb2.TagInstancesRequest(
            region_id=HOME, instance_ids=["u-b"], tags=[Tag(key=key, value=char * 128)]
        )
    )
    try:
        tagged = await instances.DescribeInstances(
            instance_pb2.DescribeInstancesRequest(
                region_id=HOME, tags=[Tag(key=key, value=char * 128)]
            )
        )
        assert [i.instance_id for i in tagged.instances] == ["u-b"]
    finally:
        await instances.UntagInstances(
            instance_pb2.UntagInstancesRequest(region_id=HOME, instance_ids=["u-b"], keys=[key])
        )
    before = fleet.server.resource_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.CreateCommand(
            pb.CreateCommandRequest(
                region_id=HOME, name=char * 129, type=SHELL, command_content=b"true"
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0].reason == "CmdName.ExceedLimit"
    assert "129 characters" in (caught.value.details() or "")
    assert fleet.server.resource_counts() == before


async def test_instances_tagged_in_any_script_are_listed_and_selected_by_it(
    admin: aio.Channel,
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    instances = instance_pb2_grpc.InstanceServiceStub(admin)
    tag = Tag(key="環境", value="本番 — ü")
    await instances.TagInstances(
        instance_pb2.TagInstancesRequest(region_id=HOME, instance_ids=["u-c", "u-b"], tags=[tag])
    )
    try:
        listed = await instances.DescribeInstances(
            instance_pb2.DescribeInstancesRequest(region_id=HOME, tags=[tag])
        )
        assert sorted(i.instance_id for i in listed.instances) == ["u-b", "u-c"]
        for instance in listed.instances:
            assert (tag.key, tag.value) in [(t.key, t.value) for t in instance.tags]
        by_key = await instances.DescribeInstances(
            instance_pb2.DescribeInstancesRequest(region_id=HOME, tags=[Tag(key=tag.key)])
        )
        assert by_key.total_count == 2
        ran = await stub.RunCommand(
            pb.RunCommandRequest(
                region_id=HOME, type=SHELL, command_content="echo 本番".encode(),
                resource_tags=[tag],
            )
        )  # fmt: skip
        seen = await watch(stub, ran.invoke_id, HOME)
        assert seen.output == {"u-b": "本番\n".encode(), "u-c": "本番\n".encode()}
    finally:
        await instances.UntagInstances(
            instance_pb2.UntagInstancesRequest(
                region_id=HOME, instance_ids=["u-b", "u-c"], keys=[tag.key]
            )
        )


@pytest.mark.parametrize(
    "script",
    [
        b'cat "$0"\n# CRLF comment lines {{who}}\r\n# and no newline at the end',
        b'cat "$0"\n# a BOM \xef\xbb\xbf, a Latin-1 byte \xe9 (not UTF-8)\r\n',
    ],
    ids=["crlf-no-final-newline", "bom-and-latin1"],
)
async def test_a_script_reaches_the_instance_byte_for_byte(
    admin: aio.Channel, script: bytes
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    parameters = b"{{who}}" in script
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=HOME, type=SHELL, command_content=script, instance_ids=["u-a"],
            enable_parameter=parameters, parameters={"who": WHO} if parameters else {},
        )
    )  # fmt: skip
    seen = await watch(stub, ran.invoke_id, HOME)
    assert seen.output["u-a"] == script.replace(b"{{who}}", WHO.encode())
    assert seen.states["u-a"].state == pb.EXECUTION_STATE_SUCCESS


async def test_a_shebang_written_with_crlf_fails_with_a_reason_and_the_agent_runs_on(
    admin: aio.Channel,
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=HOME, type=SHELL, command_content=b"#!/bin/sh\r\necho hi\r\n",
            instance_ids=["u-a"],
        )
    )  # fmt: skip
    seen = await watch(stub, ran.invoke_id, HOME)
    state = seen.states["u-a"]
    assert state.state in (pb.EXECUTION_STATE_ERROR, pb.EXECUTION_STATE_INVALID), state
    assert state.error_code, state
    assert state.error_info, state
    after = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=HOME, type=SHELL, command_content=b"echo still here", instance_ids=["u-a"]
        )
    )
    assert (await watch(stub, after.invoke_id, HOME)).output == {"u-a": b"still here\n"}


async def test_listings_filtered_by_text_that_is_not_ascii_page_through_each_once(
    admin: aio.Channel,
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    name, tag = "巡检 — prüfen", Tag(key="用途", value="巡检")
    made = set()
    for n in range(3):
        created = await stub.CreateCommand(
            pb.CreateCommandRequest(
                region_id=HOME, name=name, type=SHELL, command_content=f"echo {n}".encode(),
                tags=[tag],
            )
        )  # fmt: skip
        made.add(created.command_id)
        invoked = await stub.InvokeCommand(
            pb.InvokeCommandRequest(
                region_id=HOME, command_id=created.command_id, instance_ids=["u-b", "u-c"]
            )
        )
        await watch(stub, invoked.invoke_id, HOME)
    for filters in ({"name": name}, {"tags": [tag]}, {"name": name, "tags": [tag]}):
        paged: list[str] = []
        token = ""
        while True:
            page = await stub.DescribeCommands(
                pb.DescribeCommandsRequest(
                    region_id=HOME,
                    page_size=1,
                    page_token=token,
                    **filters,  # type: ignore[arg-type]
                )
            )
            assert page.total_count == 3
            paged += [c.command_id for c in page.commands]
            token = page.next_page_token
            if not token:
                break
        assert sorted(paged) == sorted(made), filters
    invoked_ids: list[str] = []
    token = ""
    while True:
        listed = await stub.DescribeInvocations(
            pb.DescribeInvocationsRequest(
                region_id=HOME, command_name=name, page_size=2, page_token=token
            )
        )
        invoked_ids += [i.invoke_id for i in listed.invocations]
        token = listed.next_page_token
        if not token:
            break
    assert len(invoked_ids) == len(set(invoked_ids)) == 3
