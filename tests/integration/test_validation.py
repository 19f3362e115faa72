"""Every limit and validation rule: the status code, the ErrorInfo reason, the field, and that
the rejected request wrote no row. Runs against its own server with small limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    command_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
)
from cloudassist.v1 import command_pb2 as pb
from tests.integration.helpers import error_details, watch
from tests.support import AgentProcess, ServerProcess, client_channel

REGION = "cn-limited"
SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT
LIMIT_FLAGS = [
    "--max-commands-per-region", "5",
    "--max-invocations-per-day", "3",
    "--max-instances-per-invocation", "2",
    "--max-parameters", "3",
    "--max-content-bytes", "400",
    "--min-timeout", "5",
    "--max-timeout", "100",
]  # fmt: skip


@dataclass
class Limited:
    server: ServerProcess
    shell_command: str = ""  # parameters a and b
    plain_command: str = ""  # no parameters
    bat_command: str = ""
    powershell_command: str = ""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    workdir = tmp_path_factory.mktemp("limited")
    server = ServerProcess(workdir / "server", *LIMIT_FLAGS)
    online = AgentProcess(server, "i-on", workdir, region=REGION)
    offline = AgentProcess(server, "i-off", workdir, region=REGION)
    server.start()
    try:
        online.start()
        offline.start()
        offline.stop()
        offline.wait_online(False)
        with grpc.insecure_channel(server.address) as channel:
            stub = command_pb2_grpc.CommandServiceStub(channel)
            # A Windows instance, registered as its agent would register (it need not run).
            activation_id, activation_code = server.activation(REGION)
            agent_pb2_grpc.AgentServiceStub(channel).Register(
                agent_pb2.RegisterRequest(
                    activation_id=activation_id,
                    activation_code=activation_code,
                    instance_id="i-win",
                    os_type=instance_pb2.OS_TYPE_WINDOWS,
                    hostname="win",
                )
            )

            def create(name: str, content: bytes, kind: int, params: bool) -> str:
                request = pb.CreateCommandRequest(
                    region_id=REGION,
                    name=name,
                    type=kind,  # type: ignore[arg-type]
                    command_content=content,
                    enable_parameter=params,
                )
                return stub.CreateCommand(request, metadata=server.metadata).command_id

            yield Limited(
                server,
                shell_command=create("shell", b"echo {{a}} {{b}}", SHELL, True),
                plain_command=create("plain", b"echo plain", SHELL, False),
                bat_command=create("bat", b"echo bat", pb.COMMAND_TYPE_RUN_BAT_SCRIPT, False),
                powershell_command=create(
                    "ps", b"Write-Output ps", pb.COMMAND_TYPE_RUN_POWERSHELL_SCRIPT, False
                ),
            )
    finally:
        online.stop()
        server.stop()


@pytest.fixture
async def stubs(
    limited: Limited,
) -> AsyncIterator[
    tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub]
]:
    async with client_channel(limited.server) as channel:
        yield (
            command_pb2_grpc.CommandServiceStub(channel),
            instance_pb2_grpc.InstanceServiceStub(channel),
        )


def create(**fields: Any) -> pb.CreateCommandRequest:
    defaults: dict[str, Any] = {
        "region_id": REGION,
        "name": "n",
        "type": SHELL,
        "command_content": b"echo hi",
    }
    return pb.CreateCommandRequest(**{**defaults, **fields})


def invoke(command: str, **fields: Any) -> Callable[[Limited], pb.InvokeCommandRequest]:
    def build(ctx: Limited) -> pb.InvokeCommandRequest:
        defaults: dict[str, Any] = {
            "region_id": REGION,
            "command_id": getattr(ctx, command) if command.endswith("_command") else command,
            "instance_ids": ["i-on"],
        }
        return pb.InvokeCommandRequest(**{**defaults, **fields})

    return build


def fixed(request: Any) -> Callable[[Limited], Any]:
    return lambda _ctx: request


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

# (test id, rpc, request, code, reason, field)
CASES: list[tuple[str, str, Callable[[Limited], Any], grpc.StatusCode, str, str]] = [
    # CreateCommand
    ("missing-region", "CreateCommand", fixed(create(region_id="")), INVALID,
     "MissingParameter.RegionId", "region_id"),
    ("malformed-region", "CreateCommand", fixed(create(region_id="CN_1")), INVALID,
     "InvalidRegionId.Malformed", "region_id"),
    ("launcher-without-script-file", "CreateCommand", fixed(create(launcher="python3")),
     INVALID, "InvalidParameter.Launcher", "launcher"),
    ("missing-name", "CreateCommand", fixed(create(name="")), INVALID,
     "MissingParameter.Name", "name"),
    ("name-too-long", "CreateCommand", fixed(create(name="n" * 129)), INVALID,
     "CmdName.ExceedLimit", "name"),
    ("name-control-character", "CreateCommand", fixed(create(name="a\nb")), INVALID,
     "InvalidParameterCharacter.CommandName", "name"),
    ("description-too-long", "CreateCommand", fixed(create(description="d" * 513)), INVALID,
     "CmdDesc.ExceedLimit", "description"),
    ("missing-type", "CreateCommand", fixed(create(type=0)), INVALID,
     "MissingParameter.Type", "type"),
    ("unknown-type", "CreateCommand", fixed(create(type=99)), INVALID,
     "InvalidCmdType.NotFound", "type"),
    ("missing-content", "CreateCommand", fixed(create(command_content=b"")), INVALID,
     "MissingParameter.CommandContent", "command_content"),
    # 301 bytes are 404 bytes of Base64, over the 400 configured.
    ("content-too-big", "CreateCommand", fixed(create(command_content=b"x" * 301)), INVALID,
     "CmdContent.ExceedLimit", "command_content"),
    ("timeout-below-minimum", "CreateCommand", fixed(create(timeout_seconds=4)), INVALID,
     "InvalidTimeout.ExceedLimit", "timeout_seconds"),
    ("timeout-above-maximum", "CreateCommand", fixed(create(timeout_seconds=101)), INVALID,
     "InvalidTimeout.ExceedLimit", "timeout_seconds"),
    ("negative-timeout", "CreateCommand", fixed(create(timeout_seconds=-1)), INVALID,
     "InvalidTimeout.ExceedLimit", "timeout_seconds"),
    ("bad-parameter-name", "CreateCommand",
     fixed(create(command_content=b"echo {{a b}}", enable_parameter=True)), INVALID,
     "CmdParam.InvalidParamName", "command_content"),
    ("empty-parameter-name", "CreateCommand",
     fixed(create(command_content=b"echo {{}}", enable_parameter=True)), INVALID,
     "CmdParam.EmptyKey", "command_content"),
    ("too-many-parameters", "CreateCommand",
     fixed(create(command_content=b"{{a}}{{b}}{{c}}{{d}}", enable_parameter=True)), INVALID,
     "CmdParamCount.ExceedLimit", "command_content"),
    ("parameter-name-too-long", "CreateCommand",
     fixed(create(command_content=b"{{" + b"p" * 65 + b"}}", enable_parameter=True)), INVALID,
     "CmdParamName.ExceedLimit", "command_content"),
    ("working-dir-too-long", "CreateCommand", fixed(create(working_dir="/" + "w" * 4096)),
     INVALID, "InvalidParameter.WorkingDir", "working_dir"),
    ("malformed-client-token", "CreateCommand", fixed(create(client_token="has space")),
     INVALID, "InvalidClientToken.Malformed", "client_token"),
    # ModifyCommand / DeleteCommand
    ("modify-unknown-command", "ModifyCommand",
     fixed(pb.ModifyCommandRequest(region_id=REGION, command_id="c-nope", name="x")), NOT_FOUND,
     "InvalidCmdId.NotFound", "command_id"),
    ("modify-name-too-long", "ModifyCommand",
     lambda ctx: pb.ModifyCommandRequest(
         region_id=REGION, command_id=ctx.plain_command, name="n" * 129), INVALID,
     "CmdName.ExceedLimit", "name"),
    ("modify-content-too-big", "ModifyCommand",
     lambda ctx: pb.ModifyCommandRequest(
         region_id=REGION, command_id=ctx.plain_command, command_content=b"x" * 301), INVALID,
     "CmdContent.ExceedLimit", "command_content"),
    ("delete-unknown-command", "DeleteCommand",
     fixed(pb.DeleteCommandRequest(region_id=REGION, command_id="c-nope")), NOT_FOUND,
     "InvalidCmdId.NotFound", "command_id"),
    ("delete-from-other-region", "DeleteCommand",
     lambda ctx: pb.DeleteCommandRequest(region_id="cn-other", command_id=ctx.plain_command),
     NOT_FOUND, "InvalidCmdId.NotFound", "command_id"),
    # InvokeCommand
    ("invoke-unknown-command", "InvokeCommand", invoke("c-nope"), NOT_FOUND,
     "InvalidCmdId.NotFound", "command_id"),
    ("invoke-missing-command-id", "InvokeCommand", invoke(""), INVALID,
     "MissingParameter.CommandId", "command_id"),
    ("no-instances", "InvokeCommand", invoke("plain_command", instance_ids=[]), INVALID,
     "MissingParameter.InstanceIds", "instance_ids"),
    ("too-many-instances", "InvokeCommand",
     invoke("plain_command", instance_ids=["i-on", "i-x", "i-y"]), INVALID,
     "InstanceIds.ExceedLimit", "instance_ids"),
    ("duplicate-instance", "InvokeCommand", invoke("plain_command", instance_ids=["i-on", "i-on"]),
     INVALID, "InvalidParameter.InstanceIds", "instance_ids"),
    ("malformed-instance-id", "InvokeCommand", invoke("plain_command", instance_ids=["i on"]),
     INVALID, "InvalidParameter.InstanceIds", "instance_ids"),
    ("unknown-instance", "InvokeCommand", invoke("plain_command", instance_ids=["i-on", "i-nope"]),
     NOT_FOUND, "InvalidInstance.NotFound", "instance_ids"),
    ("bat-on-linux", "InvokeCommand", invoke("bat_command"), PRECONDITION,
     "InvalidInstance.NotMatch", "instance_ids"),
    ("powershell-on-linux", "InvokeCommand", invoke("powershell_command"), PRECONDITION,
     "InvalidInstance.NotMatch", "instance_ids"),
    ("shell-on-windows", "InvokeCommand", invoke("plain_command", instance_ids=["i-win"]),
     PRECONDITION, "InvalidInstance.NotMatch", "instance_ids"),
    ("env-bad-name", "InvokeCommand", invoke("plain_command", env={"A-B": "1"}), INVALID,
     "InvalidParameter.EnvName", "env"),
    ("env-reserved-name", "InvokeCommand",
     invoke("plain_command", env={"CLOUDASSIST_TASK_ID": "x"}), INVALID,
     "InvalidParameter.EnvNameReserved", "env"),
    ("env-too-many", "InvokeCommand",
     invoke("plain_command", env={f"V{n}": "" for n in range(33)}), INVALID,
     "Env.ExceedLimit", "env"),
    ("run-env-too-large", "RunCommand",
     fixed(pb.RunCommandRequest(region_id=REGION, type=SHELL, command_content=b"true",
                                instance_ids=["i-on"], env={"BIG": "x" * 16384})),
     INVALID, "Env.ExceedLimit", "env"),
    ("missing-parameter-value", "InvokeCommand", invoke("shell_command", parameters={"a": "1"}),
     INVALID, "Parameter.MissingValue", "parameters"),
    ("unknown-parameter", "InvokeCommand",
     invoke("shell_command", parameters={"a": "1", "b": "2", "zz": "3"}), INVALID,
     "Parameter.NotMatched", "parameters"),
    ("parameters-disabled", "InvokeCommand", invoke("plain_command", parameters={"a": "1"}),
     INVALID, "Parameter.Disabled", "parameters"),
    ("too-many-parameter-values", "InvokeCommand",
     invoke("shell_command", parameters={"a": "1", "b": "2", "c": "3", "d": "4"}), INVALID,
     "ParameterCount.ExceedLimit", "parameters"),
    ("content-plus-parameters-too-big", "InvokeCommand",
     invoke("shell_command", parameters={"a": "x" * 300, "b": "y" * 100}), INVALID,
     "CmdContent.ExceedLimit", "command_content"),
    ("timeout-override-too-small", "InvokeCommand", invoke("plain_command", timeout_seconds=4),
     INVALID, "InvalidTimeout.ExceedLimit", "timeout_seconds"),
    ("frequency-without-period", "InvokeCommand",
     invoke("plain_command", repeat_mode=pb.REPEAT_MODE_ONCE, frequency="rate(1m)"), INVALID,
     "InvalidParam.Frequency", "frequency"),
    ("period-without-frequency", "InvokeCommand",
     invoke("plain_command", repeat_mode=pb.REPEAT_MODE_PERIOD), INVALID,
     "MissingParam.Frequency", "frequency"),
    ("bad-cron", "InvokeCommand",
     invoke("plain_command", repeat_mode=pb.REPEAT_MODE_PERIOD, frequency="0 61 * * * ?"),
     INVALID, "BadCronExpression", "frequency"),
    ("cron-too-often", "InvokeCommand",
     invoke("plain_command", repeat_mode=pb.REPEAT_MODE_PERIOD, frequency="*/5 * * * * ?"),
     INVALID, "InvalidParam.Frequency", "frequency"),
    ("cron-in-the-past", "InvokeCommand",
     invoke("plain_command", repeat_mode=pb.REPEAT_MODE_PERIOD, frequency="0 0 0 1 1 ? 2020"),
     INVALID, "CronExpressionExpired", "frequency"),
    ("cron-unknown-time-zone", "InvokeCommand",
     invoke("plain_command", repeat_mode=pb.REPEAT_MODE_PERIOD, frequency="0 0 * * * ? Mars/Base"),
     INVALID, "InvalidGMTOffsetForTimezone", "frequency"),
    ("bad-rate", "InvokeCommand",
     invoke("plain_command", timed=True, frequency="rate(10 minutes)"),
     INVALID, "InvalidRateExpression", "frequency"),
    ("rate-too-often", "InvokeCommand",
     invoke("plain_command", timed=True, frequency="rate(5s)", timeout_seconds=5),
     INVALID, "InvalidParam.Frequency", "frequency"),
    ("rate-not-longer-than-timeout", "InvokeCommand",
     invoke("plain_command", timed=True, frequency="rate(30s)", timeout_seconds=30),
     INVALID, "InvalidParam.Frequency", "frequency"),
    ("rate-too-large", "InvokeCommand",
     invoke("plain_command", timed=True, frequency="rate(8d)"),
     INVALID, "RateFrequencyTooLarge", "frequency"),
    ("bad-at", "InvokeCommand",
     invoke("plain_command", timed=True, frequency="at(tomorrow)"),
     INVALID, "InvalidAtExpression", "frequency"),
    ("at-in-the-past", "InvokeCommand",
     invoke("plain_command", timed=True, frequency="at(2020-01-01 00:00:00)"),
     INVALID, "AtExpressionExpired", "frequency"),
    ("timed-contradicts-once", "InvokeCommand",
     invoke("plain_command", repeat_mode=pb.REPEAT_MODE_ONCE, timed=True), INVALID,
     "InvalidRepeatMode.NotFound", "timed"),
    ("unknown-repeat-mode", "InvokeCommand", invoke("plain_command", repeat_mode=9), INVALID,
     "InvalidRepeatMode.NotFound", "repeat_mode"),
    ("username-too-long", "InvokeCommand", invoke("plain_command", username="u" * 257), INVALID,
     "Username.ExceedLimit", "username"),
    ("invoke-other-region-instance", "InvokeCommand",
     lambda ctx: pb.InvokeCommandRequest(
         region_id="cn-other", command_id=ctx.plain_command, instance_ids=["i-on"]),
     NOT_FOUND, "InvalidCmdId.NotFound", "command_id"),
    # RunCommand: one transaction, nothing saved when the invocation is refused
    ("run-content-too-big", "RunCommand",
     fixed(pb.RunCommandRequest(region_id=REGION, type=SHELL, command_content=b"x" * 301,
                                instance_ids=["i-on"], keep_command=True)), INVALID,
     "CmdContent.ExceedLimit", "command_content"),
    ("run-keep-command-unknown-instance", "RunCommand",
     fixed(pb.RunCommandRequest(region_id=REGION, type=SHELL, command_content=b"echo",
                                instance_ids=["i-nope"], keep_command=True)), NOT_FOUND,
     "InvalidInstance.NotFound", "instance_ids"),
    # Listings
    ("page-size-too-big", "DescribeCommands",
     fixed(pb.DescribeCommandsRequest(region_id=REGION, page_size=51)), INVALID,
     "InvalidParam.PageSize", "page_size"),
    ("negative-page-size", "DescribeInvocations",
     fixed(pb.DescribeInvocationsRequest(region_id=REGION, page_size=-1)), INVALID,
     "InvalidParam.PageSize", "page_size"),
    ("garbage-page-token", "DescribeInvocations",
     fixed(pb.DescribeInvocationsRequest(region_id=REGION, page_token="!!not-a-token")), INVALID,
     "InvalidParameter.PageToken", "page_token"),
    ("unknown-status-filter", "DescribeInvocationResults",
     fixed(pb.DescribeInvocationResultsRequest(region_id=REGION, invoke_record_status=99)),
     INVALID, "InvalidParameter.Filter", "invoke_record_status"),
    ("describe-results-missing-region", "DescribeInvocationResults",
     fixed(pb.DescribeInvocationResultsRequest()), INVALID, "MissingParameter.RegionId",
     "region_id"),
    # Output and stop
    ("output-unknown-invocation", "GetInvocationOutput",
     fixed(pb.GetInvocationOutputRequest(region_id=REGION, invoke_id="t-nope")), NOT_FOUND,
     "InvalidInvokeId.NotFound", "invoke_id"),
    ("output-negative-offset", "GetInvocationOutput",
     fixed(pb.GetInvocationOutputRequest(region_id=REGION, invoke_id="t-nope", offset=-1)),
     INVALID, "InvalidParameter.OutputRange", "offset"),
    ("output-limit-too-big", "GetInvocationOutput",
     fixed(pb.GetInvocationOutputRequest(region_id=REGION, invoke_id="t-x", limit=4 << 20)),
     INVALID, "InvalidParameter.OutputRange", "limit"),
    ("stop-unknown-invocation", "StopInvocation",
     fixed(pb.StopInvocationRequest(region_id=REGION, invoke_id="t-nope")), NOT_FOUND,
     "InvalidInvokeId.NotFound", "invoke_id"),
    ("stop-missing-invocation", "StopInvocation",
     fixed(pb.StopInvocationRequest(region_id=REGION)), INVALID, "MissingParameter.InvokeId",
     "invoke_id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rpc", "build", "code", "reason", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_rejected_request_has_code_reason_field_and_writes_nothing(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
    limited: Limited,
    rpc: str,
    build: Callable[[Limited], Any],
    code: grpc.StatusCode,
    reason: str,
    field: str,
) -> None:
    before = limited.server.row_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await getattr(stubs[0], rpc)(build(limited))
    assert caught.value.code() == code, caught.value.details()
    info, fields = error_details(caught.value)
    assert info.reason == reason
    assert info.domain == "cloudassist.v1"
    assert fields == [field]
    assert field in (caught.value.details() or "")
    assert limited.server.row_counts() == before


async def test_describe_instances_rejects_a_malformed_region(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await stubs[1].DescribeInstances(instance_pb2.DescribeInstancesRequest(region_id="X Y"))
    assert caught.value.code() == INVALID
    assert error_details(caught.value)[0].reason == "InvalidRegionId.Malformed"


async def test_modify_that_fails_leaves_the_command_unchanged(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
    limited: Limited,
) -> None:
    stub = stubs[0]
    with pytest.raises(aio.AioRpcError):
        await stub.ModifyCommand(
            pb.ModifyCommandRequest(
                region_id=REGION, command_id=limited.plain_command, name="ok", timeout_seconds=1
            )
        )
    listed = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, command_id=limited.plain_command)
    )
    assert listed.commands[0].name == "plain"


async def test_command_quota_per_region(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
    limited: Limited,
) -> None:
    stub = stubs[0]
    for n in range(5):
        await stub.CreateCommand(create(region_id="cn-quota", name=f"c{n}"))
    before = limited.server.row_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.CreateCommand(create(region_id="cn-quota", name="one-too-many"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, _ = error_details(caught.value)
    assert info.reason == "CmdCount.ExceedQuota"
    assert info.metadata["quota"] == "5"
    assert limited.server.row_counts() == before
    # The quota is per region, and deleting frees a place.
    await stub.CreateCommand(create(region_id="cn-quota-2", name="elsewhere"))
    listed = await stub.DescribeCommands(pb.DescribeCommandsRequest(region_id="cn-quota"))
    await stub.DeleteCommand(
        pb.DeleteCommandRequest(region_id="cn-quota", command_id=listed.commands[0].command_id)
    )
    await stub.CreateCommand(create(region_id="cn-quota", name="after-delete"))


async def test_daily_invocation_quota_per_region(
    stubs: tuple[command_pb2_grpc.CommandServiceStub, instance_pb2_grpc.InstanceServiceStub],
    limited: Limited,
) -> None:
    stub = stubs[0]
    # Dry runs use none of the quota.
    for _ in range(5):
        await stub.InvokeCommand(invoke("plain_command", dry_run=True)(limited))
    for _ in range(3):
        invoked = await stub.InvokeCommand(invoke("plain_command")(limited))
        await watch(stub, invoked.invoke_id, REGION)
    before = limited.server.row_counts()
    for dry_run in (False, True):  # a dry run is refused as the real one would be
        with pytest.raises(aio.AioRpcError) as caught:
            await stub.InvokeCommand(invoke("plain_command", dry_run=dry_run)(limited))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_details(caught.value)[0].reason == "Invocation.ExceedQuota"
    with pytest.raises(aio.AioRpcError) as run_caught:
        await stub.RunCommand(
            pb.RunCommandRequest(
                region_id=REGION,
                type=SHELL,
                command_content=b"echo",
                instance_ids=["i-on"],
                keep_command=True,
            )
        )
    assert error_details(run_caught.value)[0].reason == "Invocation.ExceedQuota"
    assert limited.server.row_counts() == before


def test_server_flags_reject_inconsistent_limits(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--min-timeout", "100", "--max-timeout", "50")
    with pytest.raises(RuntimeError, match="default_timeout_seconds must lie between"):
        server.start()
    server.stop()
