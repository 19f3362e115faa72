"""Several regions and accounts on one server, as operators run it: a non-admin account with
its own key and agent uses the whole API and sees only its own; an agent of another region
runs there and is unknown everywhere else; names and client tokens are per account and
region."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

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
from tests.integration.helpers import error_details, watch
from tests.integration.user_shaped.conftest import AWAY, AWAY_AGENT, HOME, TENANT_AGENT, Fleet
from tests.integration.user_shaped.test_targets import WHO, all_results, ran_on

SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT
WHERE = b'echo "{{ACS::InstanceId}} {{ACS::RegionId}}"\n'


async def not_found(call: Awaitable[Any], field: str) -> tuple[str, dict[str, str]]:
    """The call fails NOT_FOUND naming `field`; returns (reason, metadata)."""
    with pytest.raises(aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()
    info, fields = error_details(caught.value)
    assert fields == [field], caught.value.details()
    return info.reason, dict(info.metadata)


async def instance_ids(stub: instance_pb2_grpc.InstanceServiceAsyncStub, region: str) -> list[str]:
    listed = await stub.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=region, page_size=50)
    )
    return sorted(i.instance_id for i in listed.instances)


async def all_commands(stub: command_pb2_grpc.CommandServiceAsyncStub) -> list[pb.Command]:
    """Every command of the caller in HOME, page after page."""
    found: list[pb.Command] = []
    token = ""
    while True:
        page = await stub.DescribeCommands(
            pb.DescribeCommandsRequest(region_id=HOME, page_size=50, page_token=token)
        )
        found += page.commands
        token = page.next_page_token
        if not token:
            return found


async def test_a_non_admin_account_uses_its_own_agent_and_sees_only_its_own(
    fleet: Fleet, admin: aio.Channel, tenant: aio.Channel
) -> None:
    theirs = command_pb2_grpc.CommandServiceStub(tenant)
    their_instances = instance_pb2_grpc.InstanceServiceStub(tenant)
    mine = command_pb2_grpc.CommandServiceStub(admin)
    my_instances = instance_pb2_grpc.InstanceServiceStub(admin)
    assert await instance_ids(their_instances, HOME) == [TENANT_AGENT]
    assert await instance_ids(their_instances, AWAY) == []
    assert TENANT_AGENT not in await instance_ids(my_instances, HOME)

    created = await theirs.CreateCommand(
        pb.CreateCommandRequest(
            region_id=HOME, name="tenant-who", type=SHELL, command_content=WHO,
            enable_parameter=True,
        )
    )  # fmt: skip
    invoked = await theirs.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=HOME, command_id=created.command_id, instance_ids=[TENANT_AGENT]
        )
    )
    seen = await watch(theirs, invoked.invoke_id, HOME)
    assert ran_on(bytes(seen.output[TENANT_AGENT])) == (TENANT_AGENT, TENANT_AGENT)
    output = await theirs.GetInvocationOutput(
        pb.GetInvocationOutputRequest(region_id=HOME, invoke_id=invoked.invoke_id)
    )
    assert output.data == bytes(seen.output[TENANT_AGENT])
    results = await all_results(theirs)
    assert {r.instance_id for r in results} == {TENANT_AGENT}
    # Tagged and selected by tag within the account only.
    await their_instances.TagInstances(
        instance_pb2.TagInstancesRequest(
            region_id=HOME, instance_ids=[TENANT_AGENT], tags=[Tag(key="team", value="b")]
        )
    )
    by_tag = await theirs.RunCommand(
        pb.RunCommandRequest(
            region_id=HOME, type=SHELL, command_content=b"echo tagged",
            resource_tags=[Tag(key="team", value="b")],
        )
    )  # fmt: skip
    assert (await watch(theirs, by_tag.invoke_id, HOME)).output == {TENANT_AGENT: b"tagged\n"}
    reason, _ = await not_found(
        mine.RunCommand(
            pb.RunCommandRequest(
                region_id=HOME, type=SHELL, command_content=b"true",
                resource_tags=[Tag(key="team", value="b")],
            )
        ),
        "resource_tags",
    )  # fmt: skip
    assert reason == "InvalidResourceTags.NoInstance"
    # Each account's listings hold only its own, both ways.
    their_commands = {c.command_id for c in await all_commands(theirs)}
    assert created.command_id in their_commands
    assert not their_commands & {c.command_id for c in await all_commands(mine)}
    their_invocations = await theirs.DescribeInvocations(
        pb.DescribeInvocationsRequest(region_id=HOME, page_size=50)
    )
    their_ids = {i.invoke_id for i in their_invocations.invocations}
    assert their_ids >= {invoked.invoke_id, by_tag.invoke_id}
    assert {m.instance_id for i in their_invocations.invocations for m in i.invoke_instances} == {
        TENANT_AGENT
    }
    my_invocations = await mine.DescribeInvocations(
        pb.DescribeInvocationsRequest(region_id=HOME, instance_id=TENANT_AGENT)
    )
    assert my_invocations.total_count == 0
    assert not {r.invoke_id for r in await all_results(mine)} & their_ids
    # Neither can aim at the other's instances; the error names only the foreign one.
    _, missing = await not_found(
        theirs.RunCommand(
            pb.RunCommandRequest(
                region_id=HOME, type=SHELL, command_content=b"true",
                instance_ids=[TENANT_AGENT, "u-a"],
            )
        ),
        "instance_ids",
    )  # fmt: skip
    assert missing["instance_ids"] == "u-a"
    await not_found(
        mine.RunCommand(
            pb.RunCommandRequest(
                region_id=HOME, type=SHELL, command_content=b"true", instance_ids=[TENANT_AGENT]
            )
        ),
        "instance_ids",
    )
    await not_found(
        my_instances.TagInstances(
            instance_pb2.TagInstancesRequest(
                region_id=HOME, instance_ids=[TENANT_AGENT], tags=[Tag(key="x", value="y")]
            )
        ),
        "instance_ids",
    )


async def test_an_agent_of_another_region_runs_there_and_is_not_found_elsewhere(
    fleet: Fleet, admin: aio.Channel
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    instances = instance_pb2_grpc.InstanceServiceStub(admin)
    assert await instance_ids(instances, AWAY) == [AWAY_AGENT]
    assert AWAY_AGENT not in await instance_ids(instances, HOME)
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=AWAY, type=SHELL, command_content=WHERE, enable_parameter=True,
            instance_ids=[AWAY_AGENT],
        )
    )  # fmt: skip
    seen = await watch(stub, ran.invoke_id, AWAY)
    assert seen.output == {AWAY_AGENT: f"{AWAY_AGENT} {AWAY}\n".encode()}
    before = fleet.server.resource_counts()
    # Named in HOME beside a HOME instance: only it is named as missing, and nothing is made.
    _, missing = await not_found(
        stub.RunCommand(
            pb.RunCommandRequest(
                region_id=HOME, type=SHELL, command_content=b"true", keep_command=True,
                instance_ids=["u-a", AWAY_AGENT],
            )
        ),
        "instance_ids",
    )  # fmt: skip
    assert missing["instance_ids"] == AWAY_AGENT
    assert fleet.server.resource_counts() == before
    listed = await instances.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=HOME, instance_ids=[AWAY_AGENT])
    )
    assert (listed.total_count, list(listed.instances)) == (0, [])
    await not_found(
        instances.TagInstances(
            instance_pb2.TagInstancesRequest(
                region_id=HOME, instance_ids=[AWAY_AGENT], tags=[Tag(key="x", value="y")]
            )
        ),
        "instance_ids",
    )
    await not_found(
        instances.DeregisterInstance(
            instance_pb2.DeregisterInstanceRequest(region_id=HOME, instance_id=AWAY_AGENT)
        ),
        "instance_id",
    )
    # Its invocation is AWAY's: HOME neither lists, reads, watches nor stops it.
    home_invocations = await stub.DescribeInvocations(
        pb.DescribeInvocationsRequest(region_id=HOME, invoke_id=ran.invoke_id)
    )
    assert home_invocations.total_count == 0
    assert await all_results(stub, invoke_id=ran.invoke_id) == []
    await not_found(
        stub.GetInvocationOutput(
            pb.GetInvocationOutputRequest(region_id=HOME, invoke_id=ran.invoke_id)
        ),
        "invoke_id",
    )
    await not_found(
        stub.StopInvocation(pb.StopInvocationRequest(region_id=HOME, invoke_id=ran.invoke_id)),
        "invoke_id",
    )
    with pytest.raises(aio.AioRpcError) as caught:
        await watch(stub, ran.invoke_id, HOME)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # The instance is still AWAY's, online, and the deregistration attempt changed nothing.
    away = await instances.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=AWAY, instance_ids=[AWAY_AGENT])
    )
    assert [(i.instance_id, i.online) for i in away.instances] == [(AWAY_AGENT, True)]


async def test_the_same_command_name_in_two_regions_and_two_accounts_is_several_commands(
    admin: aio.Channel, tenant: aio.Channel
) -> None:
    mine = command_pb2_grpc.CommandServiceStub(admin)
    theirs = command_pb2_grpc.CommandServiceStub(tenant)
    name = "deploy-app"
    made: dict[tuple[str, str], str] = {}
    for who, stub, region in (("me", mine, HOME), ("me", mine, AWAY), ("them", theirs, HOME)):
        created = await stub.CreateCommand(
            pb.CreateCommandRequest(
                region_id=region, name=name, type=SHELL,
                command_content=f"echo {who} in {region}".encode(),
            )
        )  # fmt: skip
        made[(who, region)] = created.command_id
    assert len(set(made.values())) == 3
    for (who, region), command_id in made.items():
        stub = mine if who == "me" else theirs
        listed = await stub.DescribeCommands(
            pb.DescribeCommandsRequest(region_id=region, name=name, page_size=50)
        )
        assert [c.command_id for c in listed.commands] == [command_id]
    # A command is invoked in its own region only, on that region's instances.
    await not_found(
        mine.InvokeCommand(
            pb.InvokeCommandRequest(
                region_id=AWAY, command_id=made[("me", HOME)], instance_ids=[AWAY_AGENT]
            )
        ),
        "command_id",
    )
    await not_found(
        mine.InvokeCommand(
            pb.InvokeCommandRequest(
                region_id=AWAY, command_id=made[("me", AWAY)], instance_ids=["u-a"]
            )
        ),
        "instance_ids",
    )
    await not_found(
        mine.DeleteCommand(pb.DeleteCommandRequest(region_id=HOME, command_id=made[("me", AWAY)])),
        "command_id",
    )
    targets = {("me", HOME): "u-a", ("me", AWAY): AWAY_AGENT, ("them", HOME): TENANT_AGENT}
    for (who, region), command_id in made.items():
        stub = mine if who == "me" else theirs
        invoked = await stub.InvokeCommand(
            pb.InvokeCommandRequest(
                region_id=region, command_id=command_id, instance_ids=[targets[(who, region)]]
            )
        )
        seen = await watch(stub, invoked.invoke_id, region)
        assert seen.output == {targets[(who, region)]: f"{who} in {region}\n".encode()}
        by_name = await stub.DescribeInvocations(
            pb.DescribeInvocationsRequest(region_id=region, command_name=name, page_size=50)
        )
        assert {i.command_id for i in by_name.invocations} == {command_id}


async def test_one_client_token_in_two_regions_and_two_accounts_makes_three_invocations(
    admin: aio.Channel, tenant: aio.Channel
) -> None:
    mine = command_pb2_grpc.CommandServiceStub(admin)
    theirs = command_pb2_grpc.CommandServiceStub(tenant)
    token = "release-42"
    runs = [(mine, HOME, "u-b"), (mine, AWAY, AWAY_AGENT), (theirs, HOME, TENANT_AGENT)]
    invoke_ids = []
    for stub, region, instance_id in runs:
        request = pb.RunCommandRequest(
            region_id=region, type=SHELL, command_content=b"echo released",
            instance_ids=[instance_id], client_token=token,
        )  # fmt: skip
        first = await stub.RunCommand(request)
        assert (await stub.RunCommand(request)).invoke_id == first.invoke_id, "a retry: the same"
        seen = await watch(stub, first.invoke_id, region)
        assert seen.output == {instance_id: b"released\n"}
        invoke_ids.append(first.invoke_id)
    assert len(set(invoke_ids)) == 3


async def test_an_agent_of_a_single_use_activation_restarts_without_registering_again(
    fleet: Fleet, admin: aio.Channel, tenant: aio.Channel
) -> None:
    agent = fleet.agents[TENANT_AGENT]
    agent.stop()
    agent.wait_online(False)
    agent.start_process()
    agent.wait_online(True)
    activations = await admin_pb2_grpc.AdminServiceStub(admin).ListActivations(
        admin_pb2.ListActivationsRequest(page_size=50)
    )
    mine = [a for a in activations.activations if a.activation_id == fleet.tenant_activation]
    assert [(a.max_registrations, a.registrations) for a in mine] == [(1, 1)]
    assert mine[0].description == "équipe B — 团队"
    stub = command_pb2_grpc.CommandServiceStub(tenant)
    ran = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=HOME, type=SHELL, command_content=b"echo back", instance_ids=[TENANT_AGENT]
        )
    )
    assert (await watch(stub, ran.invoke_id, HOME)).output == {TENANT_AGENT: b"back\n"}
