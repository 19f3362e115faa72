"""Authentication, tenant isolation, agent registration, audit and rate limits, for real."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloudassist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    command_pb2,
    command_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
)
from tests.integration.helpers import error_details, watch
from tests.support import BIN, AgentProcess, Process, ServerProcess, client_channel, wait_until

REGION = "cn-hangzhou"
SHELL = command_pb2.COMMAND_TYPE_RUN_SHELL_SCRIPT
GUARDED_SERVICES = [
    command_pb2.DESCRIPTOR.services_by_name["CommandService"],
    instance_pb2.DESCRIPTOR.services_by_name["InstanceService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
]


@dataclass
class Tenants:
    server: ServerProcess
    agent: AgentProcess  # belongs to the admin account
    other_key: str  # the key of a second, non-admin account
    other_account: str


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    workdir = tmp_path_factory.mktemp("tenants")
    server = ServerProcess(workdir / "server", "--rate-limit", "0")
    agent = AgentProcess(server, "i-owned", workdir)
    server.start()
    try:
        agent.start()
        with grpc.insecure_channel(server.address) as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            account = admin.CreateAccount(
                admin_pb2.CreateAccountRequest(name="tenant-b"), metadata=server.metadata
            ).account
            key = admin.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(account_id=account.account_id),
                metadata=server.metadata,
            )
        yield Tenants(server, agent, key.token, account.account_id)
    finally:
        agent.stop()
        server.stop()


@pytest.fixture
async def admin_channel(tenants: Tenants) -> AsyncIterator[aio.Channel]:
    async with client_channel(tenants.server) as channel:
        yield channel


@pytest.fixture
async def other_channel(tenants: Tenants) -> AsyncIterator[aio.Channel]:
    async with client_channel(tenants.server, tenants.other_key) as channel:
        yield channel


def _methods() -> list[Any]:
    return [
        pytest.param(s, m, id=f"{s.name}.{m.name}") for s in GUARDED_SERVICES for m in s.methods
    ]


async def _call(channel: aio.Channel, service: Any, method: Any, metadata: Any = None) -> Any:
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    path = f"/{service.full_name}/{method.name}"
    if method.server_streaming:
        call = channel.unary_stream(
            path,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return [r async for r in call(request_type(), metadata=metadata)]
    unary = channel.unary_unary(
        path,
        request_serializer=request_type.SerializeToString,
        response_deserializer=response_type.FromString,
    )
    return await unary(request_type(), metadata=metadata)


@pytest.mark.parametrize(("service", "method"), _methods())
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer k-unknown.secret", "Bearer not-a-key", "Basic dXNlcjpwYXNz"],
    ids=["none", "unknown-key", "malformed-key", "wrong-scheme"],
)
async def test_every_rpc_needs_valid_credentials(
    tenants: Tenants, service: Any, method: Any, authorization: str | None
) -> None:
    before = tenants.server.row_counts()
    metadata = (("authorization", authorization),) if authorization else None
    async with aio.insecure_channel(tenants.server.address) as channel:
        with pytest.raises(aio.AioRpcError) as caught:
            await _call(channel, service, method, metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(caught.value)[0].reason in (
        "MissingParameter.Authorization",
        "InvalidApiKey",
    )
    assert tenants.server.row_counts() == before


async def test_a_wrong_secret_for_a_real_key_is_refused(tenants: Tenants) -> None:
    key_id = tenants.server.admin_key.split(".")[0]
    async with client_channel(tenants.server, f"{key_id}.wrong-secret") as channel:
        with pytest.raises(aio.AioRpcError) as caught:
            await command_pb2_grpc.CommandServiceStub(channel).DescribeCommands(
                command_pb2.DescribeCommandsRequest(region_id=REGION)
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_stay_open(tenants: Tenants) -> None:
    async with aio.insecure_channel(tenants.server.address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", list(GUARDED_SERVICES[2].methods), ids=lambda m: m.name)
async def test_admin_rpcs_need_an_admin_account(other_channel: aio.Channel, method: Any) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await _call(other_channel, GUARDED_SERVICES[2], method)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(caught.value)[0].reason == "Forbidden.NotAdmin"


async def test_another_accounts_resources_are_not_found(
    tenants: Tenants, admin_channel: aio.Channel, other_channel: aio.Channel
) -> None:
    mine = command_pb2_grpc.CommandServiceStub(admin_channel)
    theirs = command_pb2_grpc.CommandServiceStub(other_channel)
    their_instances = instance_pb2_grpc.InstanceServiceStub(other_channel)
    created = await mine.CreateCommand(
        command_pb2.CreateCommandRequest(
            region_id=REGION, name="private", type=SHELL, command_content=b"echo secret"
        )
    )
    invoked = await mine.InvokeCommand(
        command_pb2.InvokeCommandRequest(
            region_id=REGION, command_id=created.command_id, instance_ids=["i-owned"]
        )
    )
    await watch(mine, invoked.invoke_id)

    async def not_found(call: Any) -> None:
        with pytest.raises(aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()

    command_id, invoke_id = created.command_id, invoked.invoke_id
    # Commands
    listed = await theirs.DescribeCommands(
        command_pb2.DescribeCommandsRequest(region_id=REGION, command_id=command_id)
    )
    assert listed.total_count == 0
    await not_found(
        theirs.ModifyCommand(
            command_pb2.ModifyCommandRequest(region_id=REGION, command_id=command_id, name="x")
        )
    )
    await not_found(
        theirs.DeleteCommand(
            command_pb2.DeleteCommandRequest(region_id=REGION, command_id=command_id)
        )
    )
    await not_found(
        theirs.InvokeCommand(
            command_pb2.InvokeCommandRequest(
                region_id=REGION, command_id=command_id, instance_ids=["i-owned"]
            )
        )
    )
    # Invocations, results, output
    invocations = await theirs.DescribeInvocations(
        command_pb2.DescribeInvocationsRequest(region_id=REGION, invoke_id=invoke_id)
    )
    assert invocations.total_count == 0
    results = await theirs.DescribeInvocationResults(
        command_pb2.DescribeInvocationResultsRequest(region_id=REGION, invoke_id=invoke_id)
    )
    assert results.total_count == 0
    await not_found(
        theirs.GetInvocationOutput(
            command_pb2.GetInvocationOutputRequest(region_id=REGION, invoke_id=invoke_id)
        )
    )
    await not_found(
        theirs.StopInvocation(
            command_pb2.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id)
        )
    )
    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in theirs.WatchInvocation(
            command_pb2.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id)
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # Instances: invisible, not invokable, not deregistrable
    instances = await their_instances.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=REGION, instance_ids=["i-owned"])
    )
    assert instances.total_count == 0
    await not_found(
        theirs.RunCommand(
            command_pb2.RunCommandRequest(
                region_id=REGION, type=SHELL, command_content=b"id", instance_ids=["i-owned"]
            )
        )
    )
    await not_found(
        their_instances.DeregisterInstance(
            instance_pb2.DeregisterInstanceRequest(region_id=REGION, instance_id="i-owned")
        )
    )
    # ... while its owner still sees everything.
    still = await mine.DescribeCommands(
        command_pb2.DescribeCommandsRequest(region_id=REGION, command_id=command_id)
    )
    assert [c.name for c in still.commands] == ["private"]


async def test_a_revoked_key_stops_working_at_once(
    admin_channel: aio.Channel, tenants: Tenants
) -> None:
    admin = admin_pb2_grpc.AdminServiceStub(admin_channel)
    created = await admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(account_id=tenants.other_account, description="short-lived")
    )
    async with client_channel(tenants.server, created.token) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        await stub.DescribeCommands(command_pb2.DescribeCommandsRequest(region_id=REGION))
        await admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=created.key.key_id))
        with pytest.raises(aio.AioRpcError) as caught:
            await stub.DescribeCommands(command_pb2.DescribeCommandsRequest(region_id=REGION))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    keys = await admin.ListApiKeys(admin_pb2.ListApiKeysRequest(account_id=tenants.other_account))
    revoked = {k.key_id: k for k in keys.keys}[created.key.key_id]
    assert revoked.revocation_time.seconds > 0


async def test_secrets_are_stored_only_as_hashes(tenants: Tenants) -> None:
    secret = tenants.other_key.split(".", 1)[1]
    dump = "\n".join(
        repr(row)
        for table in ("api_keys", "accounts", "activations", "instances", "audit_events")
        for row in tenants.server.query(f"SELECT * FROM {table}")
    )
    assert "secret_hash" not in dump  # rows, not column names
    assert secret not in dump
    assert tenants.server.admin_key.split(".", 1)[1] not in dump


def test_key_and_credential_files_are_private(tenants: Tenants) -> None:
    admin_key = tenants.server.workdir / "admin.key"
    credentials = tenants.agent.state_dir / "credentials.json"
    assert stat.S_IMODE(admin_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert f"its API key is in {admin_key} (mode 0600)" in tenants.server.log()
    # The instance secret is in the agent's file, and only as a hash in the database.
    secret = json.loads(credentials.read_text())["instance_secret"]
    dump = "\n".join(repr(row) for row in tenants.server.query("SELECT * FROM instances"))
    assert secret
    assert secret not in dump


async def test_mutating_calls_are_audited(
    admin_channel: aio.Channel, other_channel: aio.Channel, tenants: Tenants
) -> None:
    theirs = command_pb2_grpc.CommandServiceStub(other_channel)
    created = await theirs.CreateCommand(
        command_pb2.CreateCommandRequest(
            region_id=REGION, name="audited", type=SHELL, command_content=b"true"
        )
    )
    with pytest.raises(aio.AioRpcError):
        await theirs.DeleteCommand(
            command_pb2.DeleteCommandRequest(region_id=REGION, command_id="c-not-there")
        )
    await theirs.DescribeCommands(command_pb2.DescribeCommandsRequest(region_id=REGION))
    admin = admin_pb2_grpc.AdminServiceStub(admin_channel)
    events = (
        await admin.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(account_id=tenants.other_account, page_size=50)
        )
    ).events
    by_method = {(e.method.rsplit("/", 1)[1], e.code): e for e in events}
    create = by_method[("CreateCommand", "OK")]
    assert created.command_id in create.resource_ids
    assert create.key_id == tenants.other_key.split(".")[0]
    assert any(
        e.method.endswith("/DeleteCommand")
        and e.code == "NOT_FOUND"
        and "c-not-there" in e.resource_ids
        for e in events
    ), "a refused mutating call is audited too"
    assert not any(m == "DescribeCommands" for m, _ in by_method), "reads are not audited"
    for event in events:
        assert tenants.other_key.split(".", 1)[1] not in " ".join(event.resource_ids)


async def test_invocations_are_audited_once_with_the_ids_they_made(
    admin_channel: aio.Channel, tenants: Tenants
) -> None:
    """InvokeCommand and RunCommand write their audit row in the invocation's own
    transaction: still exactly one row per call, naming what the call made; a dry run (which
    keeps nothing) and a refused call are audited by the guard as before."""
    mine = command_pb2_grpc.CommandServiceStub(admin_channel)
    created = await mine.CreateCommand(
        command_pb2.CreateCommandRequest(
            region_id=REGION, name="audited-invoke", type=SHELL, command_content=b"true"
        )
    )
    invoked = await mine.InvokeCommand(
        command_pb2.InvokeCommandRequest(
            region_id=REGION, command_id=created.command_id, instance_ids=["i-owned"]
        )
    )
    ran = await mine.RunCommand(
        command_pb2.RunCommandRequest(
            region_id=REGION, type=SHELL, command_content=b"true", instance_ids=["i-owned"]
        )
    )
    rehearsed = await mine.InvokeCommand(
        command_pb2.InvokeCommandRequest(
            region_id=REGION,
            command_id=created.command_id,
            instance_ids=["i-owned"],
            dry_run=True,
        )
    )
    assert not rehearsed.invoke_id
    with pytest.raises(aio.AioRpcError) as refused:
        await mine.InvokeCommand(
            command_pb2.InvokeCommandRequest(
                region_id=REGION, command_id=created.command_id, instance_ids=["i-absent"]
            )
        )
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    await watch(mine, invoked.invoke_id)
    await watch(mine, ran.invoke_id)
    admin = admin_pb2_grpc.AdminServiceStub(admin_channel)
    events = (
        await admin.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(method="/cloudassist.v1.CommandService/InvokeCommand")
        )
    ).events
    rows = sorted(
        (e.code, list(e.resource_ids)) for e in events if created.command_id in e.resource_ids
    )
    assert rows == [
        ("NOT_FOUND", [created.command_id, "i-absent"]),
        ("OK", [created.command_id, "i-owned"]),  # the dry run: nothing made, nothing named
        ("OK", [created.command_id, "i-owned", invoked.invoke_id]),
    ]
    runs = (
        await admin.ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(method="/cloudassist.v1.CommandService/RunCommand")
        )
    ).events
    rows = [(e.code, sorted(e.resource_ids)) for e in runs if ran.invoke_id in e.resource_ids]
    assert rows == [("OK", sorted(["i-owned", ran.command_id, ran.invoke_id]))]
    assert all(e.peer and e.key_id for e in events)


def _retry_info(error: aio.AioRpcError) -> error_details_pb2.RetryInfo:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info
    raise AssertionError("no RetryInfo")


async def test_requests_beyond_the_rate_limit_are_refused_with_retry_info(tmp_path: Path) -> None:
    # A slow refill (one token per 10 s), so that the count cannot depend on how long the
    # eight calls take to be admitted.
    server = ServerProcess(tmp_path, "--rate-limit", "0.1", "--rate-burst", "5")
    server.start()
    try:
        async with client_channel(server) as channel:
            stub = command_pb2_grpc.CommandServiceStub(channel)
            request = command_pb2.DescribeCommandsRequest(region_id=REGION)
            outcomes = await asyncio.gather(
                *(stub.DescribeCommands(request) for _ in range(8)), return_exceptions=True
            )
            refused = [o for o in outcomes if isinstance(o, aio.AioRpcError)]
            assert len(refused) == 3
            assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert error_details(refused[0])[0].reason == "Throttling.User"
            delay = _retry_info(refused[0]).retry_delay
            assert 0 < delay.ToNanoseconds() <= 10_000_000_000
    finally:
        server.stop()


async def test_an_oversized_message_is_refused(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--max-message-bytes", "65536")
    server.start()
    try:
        async with client_channel(server) as channel:
            with pytest.raises(aio.AioRpcError) as caught:
                await command_pb2_grpc.CommandServiceStub(channel).CreateCommand(
                    command_pb2.CreateCommandRequest(
                        region_id=REGION, name="big", type=SHELL, command_content=b"x" * 100_000
                    )
                )
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        server.stop()


# Agents ---------------------------------------------------------------------------------


async def _register(
    server: ServerProcess, activation: tuple[str, str], instance_id: str
) -> agent_pb2.RegisterResponse:
    async with aio.insecure_channel(server.address) as channel:
        return await agent_pb2_grpc.AgentServiceStub(channel).Register(
            agent_pb2.RegisterRequest(
                activation_id=activation[0],
                activation_code=activation[1],
                instance_id=instance_id,
                os_type=instance_pb2.OS_TYPE_LINUX,
            )
        )


async def _new_activation(server: ServerProcess, **fields: Any) -> tuple[str, str]:
    async with client_channel(server) as channel:
        response = await admin_pb2_grpc.AdminServiceStub(channel).CreateActivation(
            admin_pb2.CreateActivationRequest(region_id=REGION, **fields)
        )
    return response.activation.activation_id, response.activation_code


def test_an_agent_without_a_valid_activation_cannot_start(tenants: Tenants, tmp_path: Path) -> None:
    agent_bin = str(BIN / "cloudassist-agent")
    activation_id, _ = tenants.server.activation(REGION)
    wrong = Process(
        [
            agent_bin, "--server", tenants.server.address, "--state-dir", str(tmp_path / "wrong"),
            "--activation-id", activation_id, "--activation-code", "not-the-code",
        ],
        tmp_path / "wrong.log",
    )  # fmt: skip
    bare = Process(
        [agent_bin, "--server", tenants.server.address, "--state-dir", str(tmp_path / "bare")],
        tmp_path / "bare.log",
    )
    for process, message in (
        (wrong, "registration refused: UNAUTHENTICATED"),
        (bare, "not registered"),
    ):
        process.start()
        assert process.proc is not None
        assert process.proc.wait(30) != 0
        assert message in process.log()
        process.stop()


async def test_a_hello_with_a_wrong_secret_is_refused(tenants: Tenants) -> None:
    async with aio.insecure_channel(tenants.server.address) as channel:
        call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
        await call.write(
            agent_pb2.ConnectRequest(
                hello=agent_pb2.Hello(
                    instance_id="i-owned",
                    instance_secret="guessed",
                    os_type=instance_pb2.OS_TYPE_LINUX,
                )
            )
        )
        with pytest.raises(aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_details(caught.value)[0].reason == "InvalidInstanceCredentials"


async def test_activation_limits_hold(tenants: Tenants) -> None:
    once = await _new_activation(tenants.server, max_registrations=1)
    await _register(tenants.server, once, "i-once-1")
    with pytest.raises(aio.AioRpcError) as used_up:
        await _register(tenants.server, once, "i-once-2")
    assert used_up.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(used_up.value)[0].reason == "Activation.ExceedLimit"

    expiring = await _new_activation(
        tenants.server, expiration_time={"seconds": int(time.time()) + 4}
    )
    await asyncio.sleep(4.5)  # let it expire
    with pytest.raises(aio.AioRpcError) as expired:
        await _register(tenants.server, expiring, "i-late")
    assert expired.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(expired.value)[0].reason == "Activation.Expired"

    with pytest.raises(aio.AioRpcError) as wrong:
        await _register(tenants.server, (once[0], "wrong-code"), "i-x")
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_agent_cannot_report_for_another_instances_task(
    tenants: Tenants, admin_channel: aio.Channel
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin_channel)
    victim = await stub.RunCommand(
        command_pb2.RunCommandRequest(
            region_id=REGION,
            type=SHELL,
            command_content=b"echo real; sleep 2",
            instance_ids=["i-owned"],
        )
    )
    results = await stub.DescribeInvocationResults(
        command_pb2.DescribeInvocationResultsRequest(region_id=REGION, invoke_id=victim.invoke_id)
    )
    task_id = results.invocation_results[0].record_id
    impostor = await _register(tenants.server, tenants.server.activation(REGION), "i-impostor")
    async with aio.insecure_channel(tenants.server.address) as channel:
        call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
        await call.write(
            agent_pb2.ConnectRequest(
                hello=agent_pb2.Hello(
                    instance_id=impostor.instance_id,
                    instance_secret=impostor.instance_secret,
                    os_type=instance_pb2.OS_TYPE_LINUX,
                )
            )
        )
        assert (await call.read()).HasField("welcome")
        await call.write(
            agent_pb2.ConnectRequest(
                output=agent_pb2.TaskOutput(task_id=task_id, offset=0, data=b"forged\n")
            )
        )
        await call.write(
            agent_pb2.ConnectRequest(
                task_finished=agent_pb2.TaskFinished(task_id=task_id, exit_code=0, output_size=7)
            )
        )
        await call.done_writing()
        seen = await watch(stub, victim.invoke_id)
    assert bytes(seen.output["i-owned"]) == b"real\n"
    wait_until(
        lambda: "not one of its tasks" in (tenants.server.workdir / "server.log").read_text(),
        10,
        "the rejection to be logged",
    )


async def test_deregistering_an_instance_revokes_its_agent(
    tenants: Tenants, tmp_path: Path, admin_channel: aio.Channel
) -> None:
    agent = AgentProcess(tenants.server, "i-leaving", tmp_path)
    agent.start()
    try:
        instances = instance_pb2_grpc.InstanceServiceStub(admin_channel)
        await instances.DeregisterInstance(
            instance_pb2.DeregisterInstanceRequest(region_id=REGION, instance_id="i-leaving")
        )
        listed = await instances.DescribeInstances(
            instance_pb2.DescribeInstancesRequest(region_id=REGION, instance_ids=["i-leaving"])
        )
        assert listed.total_count == 0
        wait_until(
            lambda: "InvalidInstanceCredentials" in agent.log() or "UNAUTHENTICATED" in agent.log(),
            20,
            "the agent to be refused",
        )
        with pytest.raises(aio.AioRpcError) as caught:
            await command_pb2_grpc.CommandServiceStub(admin_channel).RunCommand(
                command_pb2.RunCommandRequest(
                    region_id=REGION, type=SHELL, command_content=b"id", instance_ids=["i-leaving"]
                )
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        agent.stop()


async def test_a_second_connection_replaces_the_first(tenants: Tenants) -> None:
    creds = await _register(tenants.server, tenants.server.activation(REGION), "i-twice")
    hello = agent_pb2.ConnectRequest(
        hello=agent_pb2.Hello(
            instance_id=creds.instance_id,
            instance_secret=creds.instance_secret,
            os_type=instance_pb2.OS_TYPE_LINUX,
        )
    )
    async with aio.insecure_channel(tenants.server.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        first = stub.Connect()
        await first.write(hello)
        assert (await first.read()).HasField("welcome")
        second = stub.Connect()
        await second.write(hello)
        assert (await second.read()).HasField("welcome")
        # The first session is closed by the server: its stream ends.
        assert await first.read() is aio.EOF
        second.cancel()
