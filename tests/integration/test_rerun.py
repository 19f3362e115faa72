"""RerunInvocation with real agents: a new invocation on just the failed instances, what it
runs, what it refuses (and that a refusal writes nothing), and `cloudassist rerun`."""

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
from tests.integration.helpers import REGION, error_details, invocation, results, run, watch
from tests.support import AgentProcess, ServerProcess, client_channel

Stub = command_pb2_grpc.CommandServiceStub
CLI = str(Path(sys.executable).parent / "cloudassist")
SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT
# Succeeds on an instance once its mark file is in $MARKS.
MARKED = b'echo "{{ACS::InstanceId}} v={{v}}"; test -e "$MARKS/ok-{{ACS::InstanceId}}"'


@dataclass
class Fleet:
    server: ServerProcess
    workdir: Path
    other_key: str  # a second account's API key


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("rerun")
    server = ServerProcess(workdir / "server", "--min-timeout", "1", "--rate-limit", "0")
    agents = [AgentProcess(server, i, workdir) for i in ("i-a", "i-b")]
    server.start()
    try:
        for agent in agents:
            agent.start()
        with server.sync_channel() as channel:
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            account = admin.CreateAccount(
                admin_pb2.CreateAccountRequest(name="rerun-other"), metadata=server.metadata
            ).account
            key = admin.CreateApiKey(
                admin_pb2.CreateApiKeyRequest(account_id=account.account_id),
                metadata=server.metadata,
            ).token
        yield Fleet(server, workdir, key)
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


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    """A directory holding the mark of i-a only: MARKED fails on i-b."""
    (tmp_path / "ok-i-a").touch()
    return tmp_path


async def half_failed(stub: Stub, marks: Path, **fields: object) -> str:
    """An invocation of MARKED on i-a (exit 0) and i-b (exit 1), ended."""
    invoke_id = await run(
        stub,
        MARKED,
        ["i-a", "i-b"],
        enable_parameter=True,
        parameters={"v": "1"},
        env={"MARKS": str(marks)},
        **fields,
    )
    await watch(stub, invoke_id)
    return invoke_id


def rerun_request(invoke_id: str, **fields: object) -> pb.RerunInvocationRequest:
    return pb.RerunInvocationRequest(region_id=REGION, invoke_id=invoke_id, **fields)  # type: ignore[arg-type]


async def test_a_rerun_runs_the_same_invocation_on_just_the_failed_instance(
    stub: Stub, marks: Path
) -> None:
    source_id = await half_failed(stub, marks, timeout_seconds=30, working_dir=str(marks))
    source = await invocation(stub, source_id)
    assert source.invoke_status == pb.INVOKE_STATUS_FINISHED  # exit 1 is "finished"
    assert {m.instance_id: m.state for m in source.invoke_instances} == {
        "i-a": pb.EXECUTION_STATE_SUCCESS,
        "i-b": pb.EXECUTION_STATE_FAILED,
    }
    (marks / "ok-i-b").touch()  # the cause is fixed: the rerun succeeds
    rerun = await stub.RerunInvocation(rerun_request(source_id))
    assert rerun.invoke_id != source_id
    assert (rerun.command_id, list(rerun.instance_ids)) == (source.command_id, ["i-b"])
    seen = await watch(stub, rerun.invoke_id)
    assert bytes(seen.output["i-b"]) == b"i-b v=1\n"
    assert set(seen.states) == {"i-b"}
    again = await invocation(stub, rerun.invoke_id)
    assert again.invoke_status == pb.INVOKE_STATUS_FINISHED
    assert [(m.instance_id, m.state) for m in again.invoke_instances] == [
        ("i-b", pb.EXECUTION_STATE_SUCCESS)
    ]
    assert again.repeat_mode == pb.REPEAT_MODE_ONCE
    for name in ("command_content", "command_name", "command_type", "parameters", "env"):
        assert getattr(again, name) == getattr(source, name), name
    for name in ("timeout_seconds", "working_dir", "username", "max_concurrency", "max_errors"):
        assert getattr(again, name) == getattr(source, name), name
    assert list(await results(stub, rerun.invoke_id)) == ["i-b"]


async def test_a_rerun_runs_the_content_that_failed_after_its_command_changed(
    stub: Stub, marks: Path
) -> None:
    created = await stub.CreateCommand(
        pb.CreateCommandRequest(
            region_id=REGION,
            name="rerun-saved",
            type=SHELL,
            command_content=b'echo "old {{ACS::InstanceId}}"; test "{{ACS::InstanceId}}" = i-a',
            enable_parameter=True,
        )
    )
    invoked = await stub.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=REGION, command_id=created.command_id, instance_ids=["i-a", "i-b"]
        )
    )
    await watch(stub, invoked.invoke_id)
    await stub.ModifyCommand(
        pb.ModifyCommandRequest(
            region_id=REGION, command_id=created.command_id, command_content=b"echo new"
        )
    )
    rerun = await stub.RerunInvocation(rerun_request(invoked.invoke_id))
    assert (rerun.command_id, list(rerun.instance_ids)) == (created.command_id, ["i-b"])
    assert bytes((await watch(stub, rerun.invoke_id)).output["i-b"]) == b"old i-b\n"
    listed = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, command_id=created.command_id)
    )
    assert listed.commands[0].invoke_times == 2
    # Deleted: the invocation still holds what it ran.
    await stub.DeleteCommand(
        pb.DeleteCommandRequest(region_id=REGION, command_id=created.command_id)
    )
    third = await stub.RerunInvocation(rerun_request(rerun.invoke_id))
    assert bytes((await watch(stub, third.invoke_id)).output["i-b"]) == b"old i-b\n"


async def test_states_and_instances_choose_which_failed_instances_run_again(
    stub: Stub, marks: Path
) -> None:
    # i-a times out, i-b exits 1: the invocation is PartialFailed.
    script = b'test "{{ACS::InstanceId}}" = i-b && exit 1; sleep 30'
    source_id = await run(stub, script, ["i-a", "i-b"], enable_parameter=True, timeout_seconds=1)
    await watch(stub, source_id)
    assert (await invocation(stub, source_id)).invoke_status == pb.INVOKE_STATUS_PARTIAL_FAILED
    timed_out = await stub.RerunInvocation(
        rerun_request(source_id, states=[pb.EXECUTION_STATE_TIMEOUT])
    )
    assert list(timed_out.instance_ids) == ["i-a"]
    await stub.StopInvocation(
        pb.StopInvocationRequest(region_id=REGION, invoke_id=timed_out.invoke_id)
    )
    named = await stub.RerunInvocation(rerun_request(source_id, instance_ids=["i-b"]))
    assert list(named.instance_ids) == ["i-b"]
    every = await stub.RerunInvocation(rerun_request(source_id))
    assert list(every.instance_ids) == ["i-a", "i-b"]
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=every.invoke_id))
    for made in (timed_out, named, every):
        await watch(stub, made.invoke_id)


async def test_a_client_token_makes_a_rerun_once(
    stub: Stub, marks: Path, channel: aio.Channel, fleet: Fleet
) -> None:
    source_id = await half_failed(stub, marks)
    before = fleet.server.resource_counts()
    first = await stub.RerunInvocation(rerun_request(source_id, client_token="rerun-once"))
    second = await stub.RerunInvocation(rerun_request(source_id, client_token="rerun-once"))
    assert second == first
    after = fleet.server.resource_counts()
    assert after["invocations"] == before["invocations"] + 1
    assert after["records"] == before["records"] + 1
    await watch(stub, first.invoke_id)
    events = (
        await admin_pb2_grpc.AdminServiceStub(channel).ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(
                method="/cloudassist.v1.CommandService/RerunInvocation", page_size=50
            )
        )
    ).events
    # The call that made it, and the retry: each audited once, naming the source and the rerun.
    rows = [e.code for e in events if {source_id, first.invoke_id} <= set(e.resource_ids)]
    assert rows == ["OK", "OK"]


async def test_a_file_push_runs_again_as_a_file_push(stub: Stub, tmp_path: Path) -> None:
    (tmp_path / "app.conf").write_text("old")
    sent = await stub.SendFile(
        pb.SendFileRequest(
            region_id=REGION,
            name="app.conf",
            target_dir=str(tmp_path),
            content=b"new",
            instance_ids=["i-a"],
        )
    )
    await watch(stub, sent.invoke_id)
    (tmp_path / "app.conf").unlink()  # what made it INVALID (FileAlreadyExists) is gone
    rerun = await stub.RerunInvocation(rerun_request(sent.invoke_id))
    await watch(stub, rerun.invoke_id)
    listed = await stub.DescribeSendFileResults(
        pb.DescribeSendFileResultsRequest(region_id=REGION, invoke_id=rerun.invoke_id)
    )
    assert [(r.instance_id, r.state) for r in listed.results] == [
        ("i-a", pb.EXECUTION_STATE_SUCCESS)
    ]
    assert (tmp_path / "app.conf").read_text() == "new"


async def refused(
    fleet: Fleet, call: object, code: grpc.StatusCode, reason: str, *words: str
) -> str:
    """Awaits `call`, which must fail with `code` and `reason`, naming `words`, writing no row."""
    before = fleet.server.resource_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    error = caught.value
    details = error.details() or ""
    assert (error.code(), error_details(error)[0].reason) == (code, reason), details
    for word in words:
        assert word in details
    assert fleet.server.resource_counts() == before
    return details


async def test_refusals_name_the_rule_and_write_nothing(
    stub: Stub, marks: Path, fleet: Fleet
) -> None:
    failed_id = await half_failed(stub, marks)
    ok_id = await run(stub, "true", ["i-a", "i-b"])
    await watch(stub, ok_id)
    invalid, precondition = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    await refused(
        fleet,
        stub.RerunInvocation(rerun_request("t-not-there")),
        grpc.StatusCode.NOT_FOUND,
        "InvalidInvokeId.NotFound",
        "invoke_id",
    )
    await refused(
        fleet,
        stub.RerunInvocation(rerun_request("")),
        invalid,
        "MissingParameter.InvokeId",
        "invoke_id",
    )
    for states in ([pb.EXECUTION_STATE_SUCCESS], [pb.EXECUTION_STATE_UNSPECIFIED], [99]):
        await refused(
            fleet,
            stub.RerunInvocation(rerun_request(failed_id, states=states)),
            invalid,
            "InvalidParameter.States",
            "states: ",
        )
    await refused(
        fleet,
        stub.RerunInvocation(rerun_request(failed_id, instance_ids=["i-a"])),
        precondition,
        "InvalidInstanceId.NotFailed",
        "instance_ids: i-a did not end",
    )
    await refused(
        fleet,
        stub.RerunInvocation(rerun_request(failed_id, states=[pb.EXECUTION_STATE_TIMEOUT])),
        precondition,
        "InvalidStatus.NoFailedInstance",
        "ended TIMEOUT",
    )
    await refused(
        fleet,
        stub.RerunInvocation(rerun_request(ok_id)),
        precondition,
        "InvalidStatus.NoFailedInstance",
        f"invocation {ok_id} is Finished",
    )
    running_id = await run(stub, "sleep 30", ["i-a"])
    await refused(
        fleet,
        stub.RerunInvocation(rerun_request(running_id)),
        precondition,
        "InvalidStatus.InvocationRunning",
        f"invocation {running_id} is Running",
    )
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=running_id))
    await watch(stub, running_id)
    await refused(
        fleet,
        stub.RerunInvocation(rerun_request(running_id)),
        precondition,
        "InvalidStatus.NoFailedInstance",
        "is Stopped",
    )
    async with client_channel(fleet.server, fleet.other_key) as other:
        await refused(
            fleet,
            command_pb2_grpc.CommandServiceStub(other).RerunInvocation(rerun_request(failed_id)),
            grpc.StatusCode.NOT_FOUND,
            "InvalidInvokeId.NotFound",
        )


async def test_a_failed_instance_deregistered_since_is_not_found(
    stub: Stub, fleet: Fleet, channel: aio.Channel
) -> None:
    agent = AgentProcess(fleet.server, "i-gone", fleet.workdir)
    agent.start()
    try:
        source_id = await run(stub, "exit 3", ["i-gone", "i-a"])
        await watch(stub, source_id)
    finally:
        agent.stop()
    await instance_pb2_grpc.InstanceServiceStub(channel).DeregisterInstance(
        instance_pb.DeregisterInstanceRequest(region_id=REGION, instance_id="i-gone")
    )
    details = await refused(
        fleet,
        stub.RerunInvocation(rerun_request(source_id)),
        grpc.StatusCode.NOT_FOUND,
        "InvalidInstance.NotFound",
        "i-gone",
    )
    assert "i-a" not in details
    narrowed = await stub.RerunInvocation(rerun_request(source_id, instance_ids=["i-a"]))
    assert list(narrowed.instance_ids) == ["i-a"]
    await watch(stub, narrowed.invoke_id)


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


async def test_cli_rerun_failed_prints_the_new_invocation(
    stub: Stub, marks: Path, fleet: Fleet
) -> None:
    source_id = await half_failed(stub, marks)
    code, out, err = await cli(fleet, "rerun", source_id, "--failed")
    assert code == 0, err
    new_id = out.strip()
    assert new_id.startswith("t-")
    assert new_id != source_id
    assert [m.instance_id for m in (await invocation(stub, new_id)).invoke_instances] == ["i-b"]
    assert bytes((await watch(stub, new_id)).output["i-b"]) == b"i-b v=1\n"
    # --watch follows it and exits with the script's code (still 1: i-b has no mark).
    code, out, err = await cli(
        fleet, "rerun", source_id, "--state", "failed", "-i", "i-b", "--watch"
    )
    assert (code, out.splitlines()[1:]) == (1, ["i-b v=1"]), err
    code, _, err = await cli(fleet, "rerun", source_id, "--state", "timeout,bogus")
    assert code != 0
    assert "--state takes failed, timeout, aborted, invalid, error, not 'bogus'" in err
    code, _, err = await cli(fleet, "rerun", source_id, "-i", "i-a", "--json")
    assert code == 2
    assert "InvalidInstanceId.NotFailed" in err
    code, out, err = await cli(fleet, "rerun", source_id, "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["instance_ids"] == ["i-b"]
    await watch(stub, made["invoke_id"])
