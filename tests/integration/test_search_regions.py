"""Finding things: commands and invocations by part of a name (any case, `%` and `_` as
themselves, any script), the DescribeInvocations filters together, and DescribeRegions for two
accounts in several regions; the same through the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import admin_pb2, admin_pb2_grpc, command_pb2_grpc, instance_pb2_grpc
from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import instance_pb2 as instance_pb
from tests.integration.helpers import REGION, run, watch
from tests.support import AgentProcess, ServerProcess, client_channel

Stub = command_pb2_grpc.CommandServiceStub
CLI = str(Path(sys.executable).parent / "cloudassist")
SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT
AWAY = "eu-west-1"
NAMES = [
    "greet-f23d4",
    "GREETING",
    "100%_done",
    "100 percent done",
    "a/b\\c",
    "Grüße-ÄÖÜ",
    "École",
    "Δοκιμή",
]


@dataclass
class Fleet:
    server: ServerProcess
    other_key: str  # the API key of a second account, with its own agent in REGION
    command_ids: dict[str, str]  # name -> id, of the admin's commands in REGION


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("search")
    server = ServerProcess(workdir / "server", "--rate-limit", "0")
    agents = [
        AgentProcess(server, "i-a", workdir),
        AgentProcess(server, "i-b", workdir),
        AgentProcess(server, "i-eu", workdir, region=AWAY),
    ]
    server.start()
    try:
        with server.sync_channel() as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            account = admin.CreateAccount(
                admin_pb2.CreateAccountRequest(name="search-other"), metadata=server.metadata
            ).account
            key = admin.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(account_id=account.account_id),
                metadata=server.metadata,
            ).token
            activation = admin.CreateActivation(
                admin_pb2.CreateActivationRequest(
                    account_id=account.account_id, region_id=REGION, max_registrations=1
                ),
                metadata=server.metadata,
            )
            commands = command_pb2_grpc.CommandServiceStub(channel)
            command_ids = {
                name: commands.CreateCommand(
                    pb.CreateCommandRequest(
                        region_id=REGION, name=name, type=SHELL, command_content=b"true"
                    ),
                    metadata=server.metadata,
                ).command_id
                for name in NAMES
            }
        agents.append(
            AgentProcess(
                server,
                "i-other",
                workdir,
                activation=(activation.activation.activation_id, activation.activation_code),
                api_key=key,
            )
        )
        for agent in agents:
            agent.start()
        yield Fleet(server, key, command_ids)
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


@pytest.fixture
async def channel(fleet: Fleet) -> AsyncIterator[aio.Channel]:
    async with client_channel(fleet.server) as channel:
        yield channel


@pytest.fixture
def stub(channel: aio.Channel) -> Stub:
    return command_pb2_grpc.CommandServiceStub(channel)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("greet", ["greet-f23d4", "GREETING"]),
        ("GrEeT-F", ["greet-f23d4"]),
        ("%", ["100%_done"]),
        ("0%_", ["100%_done"]),
        ("_", ["100%_done"]),
        ("100_", []),
        ("/b\\", ["a/b\\c"]),
        ("\\", ["a/b\\c"]),
        ("grüsse", []),
        ("GRÜSSE-", []),
        ("GRÜ", ["Grüße-ÄÖÜ"]),
        ("äöü", ["Grüße-ÄÖÜ"]),
        ("école", ["École"]),
        ("ΔΟΚΙΜ", ["Δοκιμή"]),
        ("greet-f23d4", ["greet-f23d4"]),
        ("nothing-like-it", []),
    ],
)
async def test_commands_are_found_by_part_of_their_name_in_any_case(
    stub: Stub, text: str, found: list[str]
) -> None:
    response = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, name=text, page_size=50)
    )
    assert sorted(c.name for c in response.commands) == sorted(found)
    assert response.total_count == len(found)


async def test_invocations_are_found_by_part_of_their_command_name(
    stub: Stub, fleet: Fleet
) -> None:
    made = {}
    for name in ("greet-f23d4", "100%_done", "École"):
        invoked = await stub.InvokeCommand(
            pb.InvokeCommandRequest(
                region_id=REGION, command_id=fleet.command_ids[name], instance_ids=["i-a"]
            )
        )
        made[name] = invoked.invoke_id
        await watch(stub, invoked.invoke_id)
    for text, names in (("GREET", ["greet-f23d4"]), ("%_", ["100%_done"]), ("éC", ["École"])):
        response = await stub.DescribeInvocations(
            pb.DescribeInvocationsRequest(region_id=REGION, command_name=text, page_size=50)
        )
        assert [i.invoke_id for i in response.invocations] == [made[n] for n in names], text
    response = await stub.DescribeInvocations(
        pb.DescribeInvocationsRequest(region_id=REGION, command_name="_")
    )
    assert [i.command_name for i in response.invocations] == ["100%_done"]


async def test_the_invocation_filters_hold_together(stub: Stub) -> None:
    both = await run(stub, "exit 1", ["i-a", "i-b"], name="combo-both")
    only_a = await run(stub, "true", ["i-a"], name="combo-a")
    other = await run(stub, "true", ["i-b"], name="other-b")
    for invoke_id in (both, only_a, other):
        await watch(stub, invoke_id)

    async def found(**filters: object) -> list[str]:
        response = await stub.DescribeInvocations(
            pb.DescribeInvocationsRequest(region_id=REGION, page_size=50, **filters)  # type: ignore[arg-type]
        )
        assert response.total_count == len(response.invocations)
        return [i.invoke_id for i in response.invocations]

    assert await found(command_name="combo") == [only_a, both]
    assert await found(command_name="combo", instance_id="i-b") == [both]
    assert await found(instance_id="i-b", command_name="b") == [other, both]
    assert await found(command_name="combo", invoke_status=pb.INVOKE_STATUS_FINISHED) == [
        only_a,
        both,
    ]
    assert await found(command_name="combo-a", instance_id="i-b") == []
    assert await found(command_name="combo", invoke_id=both) == [both]
    command_id = (
        (
            await stub.DescribeInvocations(
                pb.DescribeInvocationsRequest(region_id=REGION, invoke_id=both)
            )
        )
        .invocations[0]
        .command_id
    )
    assert await found(command_id=command_id, command_name="combo", instance_id="i-a") == [both]
    assert await found(command_id=command_id, command_name="other") == []


async def test_a_name_filter_pages_through_its_matches(stub: Stub) -> None:
    first = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, name="e", page_size=2)
    )
    names = [c.name for c in first.commands]
    later = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(
            region_id=REGION, name="e", page_size=50, page_token=first.next_page_token
        )
    )
    names += [c.name for c in later.commands]
    expected = [n for n in NAMES if "e" in n.lower()]
    assert sorted(names) == sorted(expected)
    assert first.total_count == len(expected)
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.DescribeCommands(
            pb.DescribeCommandsRequest(
                region_id=REGION, name="g", page_size=2, page_token=first.next_page_token
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_search_text_longer_than_a_name_is_refused(stub: Stub) -> None:
    text = "a" * 129
    for call, field in (
        (stub.DescribeCommands(pb.DescribeCommandsRequest(region_id=REGION, name=text)), "name"),
        (
            stub.DescribeInvocations(
                pb.DescribeInvocationsRequest(region_id=REGION, command_name=text)
            ),
            "command_name",
        ),
    ):
        with pytest.raises(aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == (
            f"{field}: 129 characters; a command name, and so the text searched for in one, is "
            "at most 128"
        )
    found = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, name="a" * 128)
    )
    assert found.total_count == 0


def regions_of(response: instance_pb.DescribeRegionsResponse) -> list[tuple[str, int, int, int]]:
    return [
        (r.region_id, r.instance_count, r.online_count, r.command_count) for r in response.regions
    ]


async def test_each_account_sees_the_regions_of_its_own_resources(
    channel: aio.Channel, stub: Stub, fleet: Fleet
) -> None:
    instances = instance_pb2_grpc.InstanceServiceStub(channel)
    await stub.CreateCommand(
        pb.CreateCommandRequest(
            region_id="ap-commands-only", name="x", type=SHELL, command_content=b"true"
        )
    )
    listed = regions_of(await instances.DescribeRegions(instance_pb.DescribeRegionsRequest()))
    # (us-past: another test's, when it ran first)
    assert [r for r in listed if r[0] != "us-past"] == [
        ("ap-commands-only", 0, 0, 1),
        (REGION, 2, 2, len(NAMES)),
        (AWAY, 1, 1, 0),
    ]
    async with client_channel(fleet.server, fleet.other_key) as other:
        theirs = instance_pb2_grpc.InstanceServiceStub(other)
        assert regions_of(await theirs.DescribeRegions(instance_pb.DescribeRegionsRequest())) == [
            (REGION, 1, 1, 0)
        ]


async def test_a_region_with_only_invocations_is_listed(
    channel: aio.Channel, stub: Stub, fleet: Fleet, tmp_path: Path
) -> None:
    agent = AgentProcess(fleet.server, "i-short", tmp_path, region="us-past")
    agent.start()
    try:
        ran = await stub.RunCommand(
            pb.RunCommandRequest(
                region_id="us-past", type=SHELL, command_content=b"true", instance_ids=["i-short"]
            )
        )
        await watch(stub, ran.invoke_id, region="us-past")
    finally:
        agent.stop()
    instances = instance_pb2_grpc.InstanceServiceStub(channel)
    await instances.DeregisterInstance(
        instance_pb.DeregisterInstanceRequest(region_id="us-past", instance_id="i-short")
    )
    listed = regions_of(await instances.DescribeRegions(instance_pb.DescribeRegionsRequest()))
    assert ("us-past", 0, 0, 0) in listed
    assert [r[0] for r in listed] == sorted(r[0] for r in listed)


async def cli(fleet: Fleet, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "--server",
        fleet.server.address,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CLOUDASSIST_API_KEY": fleet.server.admin_key},
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_the_cli_searches_and_lists_regions(fleet: Fleet) -> None:
    code, out, err = await cli(fleet, "commands", "list", "--name", "GREET", "--json")
    assert code == 0, err
    assert sorted(c["name"] for c in json.loads(out)["commands"]) == ["GREETING", "greet-f23d4"]
    code, out, err = await cli(fleet, "commands", "list", "--name", "%")
    assert code == 0, err
    assert "100%_done" in out
    assert "100 percent done" not in out
    code, out, err = await cli(fleet, "invocations", "--command-name", "ÉCOLE", "--json")
    assert code == 0, err
    listed = json.loads(out).get("invocations", [])
    assert {i["command_name"] for i in listed} <= {"École"}
    code, out, err = await cli(fleet, "regions")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["REGION", "INSTANCES", "ONLINE", "COMMANDS"]
    assert [REGION, "2", "2", str(len(NAMES))] in [line.split() for line in lines[1:]]
    code, out, err = await cli(fleet, "regions", "--json")
    assert code == 0, err
    by_region = {r["region_id"]: r for r in json.loads(out)["regions"]}
    assert by_region[AWAY] == {
        "region_id": AWAY,
        "instance_count": "1",
        "online_count": "1",
    }
