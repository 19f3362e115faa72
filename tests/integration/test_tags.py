"""Instance tags: reported by agents, set through the API, used to pick an invocation's
instances, and kept per account."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    command_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
)
from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1.tag_pb2 import Tag
from tests.integration.helpers import REGION, error_details, watch
from tests.support import BIN, AgentProcess, ServerProcess, client_channel

SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT
AGENT_TAGS = {
    "i-web1": ["role=web", "env=prod"],
    "i-web2": ["role=web"],
    "i-db": ["role=db", "env=prod"],
}


@dataclass
class Tagged:
    server: ServerProcess
    agents: dict[str, AgentProcess]
    other_key: str  # an API key of a second account


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tagged]:
    workdir = tmp_path_factory.mktemp("tags")
    server = ServerProcess(workdir / "server", "--max-instances-per-invocation", "2")
    agents = {}
    for instance_id, tags in AGENT_TAGS.items():
        agents[instance_id] = AgentProcess(server, instance_id, workdir)
        agents[instance_id].extra = [arg for tag in tags for arg in ("--tag", tag)]
    server.start()
    try:
        for agent in agents.values():
            agent.start()
        with grpc.insecure_channel(server.address) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            account = admin.CreateAccount(
                admin_pb2.CreateAccountRequest(name="other"), metadata=server.metadata
            ).account
            key = admin.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(account_id=account.account_id),
                metadata=server.metadata,
            )
        yield Tagged(server, agents, key.token)
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


@pytest.fixture
async def stubs(
    tagged: Tagged,
) -> AsyncIterator[
    tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub]
]:
    async with client_channel(tagged.server) as channel:
        yield (
            command_pb2_grpc.CommandServiceStub(channel),
            instance_pb2_grpc.InstanceServiceStub(channel),
        )


def tags(*pairs: str) -> list[Tag]:
    return [Tag(key=k, value=v) for k, _, v in (p.partition("=") for p in pairs)]


async def matching(stub: instance_pb2_grpc.InstanceServiceStub, *pairs: str) -> list[str]:
    response = await stub.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=REGION, tags=tags(*pairs))
    )
    return sorted(i.instance_id for i in response.instances)


async def test_agents_report_their_tags_and_listings_filter_by_them(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
) -> None:
    instances = stubs[1]
    response = await instances.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=REGION, instance_ids=["i-web1"])
    )
    assert {(t.key, t.value) for t in response.instances[0].tags} == {
        ("role", "web"),
        ("env", "prod"),
    }
    assert await matching(instances, "role=web") == ["i-web1", "i-web2"]
    assert await matching(instances, "role=web", "env=prod") == ["i-web1"]
    assert await matching(instances, "env") == ["i-db", "i-web1"], "no value: any value"
    assert await matching(instances, "role=cache") == []


async def test_a_command_runs_on_the_instances_with_the_tags(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
) -> None:
    commands = stubs[0]
    ran = await commands.RunCommand(
        pb.RunCommandRequest(
            region_id=REGION,
            type=SHELL,
            command_content=b"echo on {{ACS::InstanceId}}",
            enable_parameter=True,
            resource_tags=tags("role=web"),
        )
    )
    seen = await watch(commands, ran.invoke_id)
    assert {i: bytes(o) for i, o in seen.output.items()} == {
        "i-web1": b"on i-web1\n",
        "i-web2": b"on i-web2\n",
    }
    assert all(s.state == pb.EXECUTION_STATE_SUCCESS for s in seen.states.values())


def reason_field(reason: str) -> str:
    return "instance_ids" if reason == "InstanceIds.ExceedLimit" else "resource_tags"


@pytest.mark.parametrize(
    ("request_fields", "code", "reason"),
    [
        (
            {"instance_ids": ["i-db"], "resource_tags": tags("role=web")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "InvalidParameter.ResourceTags",
        ),
        (
            {"resource_tags": tags("role=cache")},
            grpc.StatusCode.NOT_FOUND,
            "InvalidResourceTags.NoInstance",
        ),
        (  # three instances have a role; the server allows two per invocation
            {"resource_tags": tags("role")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "InstanceIds.ExceedLimit",
        ),
        (
            {"resource_tags": tags("acs:role=web")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "InvalidTagKey.Malformed",
        ),
    ],
)
async def test_bad_targets_are_refused_and_write_nothing(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
    tagged: Tagged,
    request_fields: dict[str, object],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    before = tagged.server.row_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await stubs[0].RunCommand(
            pb.RunCommandRequest(
                region_id=REGION, type=SHELL, command_content=b"true", **request_fields
            )  # type: ignore[arg-type]
        )
    assert caught.value.code() == code
    info, fields = error_details(caught.value)
    assert info.reason == reason
    assert fields == [reason_field(reason)]
    assert tagged.server.row_counts() == before


async def test_api_tags_win_over_the_agents_and_can_be_removed(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
    tagged: Tagged,
) -> None:
    instances = stubs[1]
    await instances.TagInstances(
        instance_pb2.TagInstancesRequest(
            region_id=REGION, instance_ids=["i-web2"], tags=tags("role=frontend", "team=blue")
        )
    )
    assert await matching(instances, "role=frontend") == ["i-web2"]
    # The agent says role=web again when it reconnects; the API's value stays.
    agent = tagged.agents["i-web2"]
    agent.stop()
    agent.wait_online(False)
    await asyncio.to_thread(agent.start)
    assert await matching(instances, "role=frontend", "team=blue") == ["i-web2"]
    await instances.UntagInstances(
        instance_pb2.UntagInstancesRequest(
            region_id=REGION, instance_ids=["i-web2"], keys=["team", "role"]
        )
    )
    assert await matching(instances, "team") == []
    # With the API's tag gone, the agent's own comes back at its next hello.
    agent.stop()
    agent.wait_online(False)
    await asyncio.to_thread(agent.start)
    assert await matching(instances, "role=web") == ["i-web1", "i-web2"]


async def test_tagging_checks_its_input(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
    tagged: Tagged,
) -> None:
    instances = stubs[1]
    cases: list[tuple[instance_pb2.TagInstancesRequest, grpc.StatusCode, str]] = [
        (
            instance_pb2.TagInstancesRequest(
                region_id=REGION, instance_ids=["i-db", "i-nope"], tags=tags("a=1")
            ),
            grpc.StatusCode.NOT_FOUND,
            "InvalidInstance.NotFound",
        ),
        (
            instance_pb2.TagInstancesRequest(
                region_id=REGION, instance_ids=["i-db"], tags=tags("x" * 129 + "=1")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "InvalidTagKey.Malformed",
        ),
        (
            instance_pb2.TagInstancesRequest(
                region_id=REGION, instance_ids=["i-db"], tags=tags(*(f"k{n}=v" for n in range(19)))
            ),  # with the agent's two: 21
            grpc.StatusCode.INVALID_ARGUMENT,
            "Tags.ExceedLimit",
        ),
        (
            instance_pb2.TagInstancesRequest(region_id=REGION, instance_ids=["i-db"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "InvalidTagKey.Malformed",
        ),
    ]
    for request, code, reason in cases:
        before = tagged.server.query("SELECT instance_id, key, value FROM instance_tags")
        with pytest.raises(aio.AioRpcError) as caught:
            await instances.TagInstances(request)
        assert caught.value.code() == code, reason
        assert error_details(caught.value)[0].reason == reason
        after = tagged.server.query("SELECT instance_id, key, value FROM instance_tags")
        assert sorted(after) == sorted(before)


async def test_another_account_neither_sees_nor_selects_nor_tags_these_instances(
    tagged: Tagged,
) -> None:
    async with client_channel(tagged.server, tagged.other_key) as channel:
        instances = instance_pb2_grpc.InstanceServiceStub(channel)
        assert await matching(instances, "role=web") == []
        with pytest.raises(aio.AioRpcError) as caught:
            await command_pb2_grpc.CommandServiceStub(channel).RunCommand(
                pb.RunCommandRequest(
                    region_id=REGION,
                    type=SHELL,
                    command_content=b"true",
                    resource_tags=tags("role=web"),
                )
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(aio.AioRpcError) as tag_caught:
            await instances.TagInstances(
                instance_pb2.TagInstancesRequest(
                    region_id=REGION, instance_ids=["i-web1"], tags=tags("owned=no")
                )
            )
        assert tag_caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_cli_tags_lists_and_runs_by_tag(tagged: Tagged) -> None:
    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "cloudassist"),
            "--server",
            tagged.server.address,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "CLOUDASSIST_API_KEY": tagged.server.admin_key},
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    assert (await cli("tag", "-i", "i-db", "-t", "tier=data"))[0] == 0
    code, listed = await cli("instances", "-t", "tier=data")
    assert code == 0
    assert "i-db" in listed
    assert "tier=data" in listed
    assert "i-web1" not in listed
    code, out = await cli("run", "-t", "tier=data", "echo ran")
    assert (code, out.splitlines()[-1]) == (0, "i-db | ran")
    assert (await cli("untag", "-i", "i-db", "-k", "tier"))[0] == 0
    assert "i-db" not in (await cli("instances", "-t", "tier"))[1]
    code, out = await cli("run", "echo nowhere")
    assert code != 0
    assert "give the instances with -i ID or --tag KEY=VALUE" in out


async def test_commands_carry_tags_and_listings_filter_by_them(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
    tagged: Tagged,
) -> None:
    commands = stubs[0]
    region = "cn-command-tags"

    async def create(name: str, *pairs: str) -> str:
        response = await commands.CreateCommand(
            pb.CreateCommandRequest(
                region_id=region,
                name=name,
                type=SHELL,
                command_content=b"true",
                tags=tags(*pairs),
            )
        )
        return response.command_id

    backup = await create("backup", "team=ops", "kind=backup")
    deploy = await create("deploy", "team=dev")
    await create("plain")

    async def listed(*pairs: str) -> list[str]:
        response = await commands.DescribeCommands(
            pb.DescribeCommandsRequest(region_id=region, tags=tags(*pairs))
        )
        return [c.command_id for c in response.commands]

    assert await listed("team") == [deploy, backup]
    assert await listed("team=ops") == [backup]
    assert await listed("team=ops", "kind=deploy") == []
    (described,) = (
        await commands.DescribeCommands(
            pb.DescribeCommandsRequest(region_id=region, command_id=backup)
        )
    ).commands
    assert {(t.key, t.value) for t in described.tags} == {("team", "ops"), ("kind", "backup")}
    # Modifying a command keeps its tags; deleting it removes them.
    await commands.ModifyCommand(
        pb.ModifyCommandRequest(region_id=region, command_id=backup, description="nightly")
    )
    assert await listed("kind=backup") == [backup]
    await commands.DeleteCommand(pb.DeleteCommandRequest(region_id=region, command_id=backup))
    assert tagged.server.query(f"SELECT * FROM command_tags WHERE command_id = '{backup}'") == []

    before = tagged.server.row_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await create("reserved", "cloudassist:owner=me")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(caught.value)[0].reason == "InvalidTagKey.Malformed"
    assert tagged.server.row_counts() == before
