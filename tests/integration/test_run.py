"""End to end: a real server, three real agents, real scripts."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc, instance_pb2, instance_pb2_grpc
from tests.integration.conftest import AGENTS, Cluster
from tests.integration.helpers import (
    REGION,
    error_details,
    invocation,
    read_output,
    results,
    run,
    watch,
)
from tests.support import process_gone

Stub = command_pb2_grpc.CommandServiceStub

EXIT_BY_INSTANCE = {"i-a": 0, "i-b": 3, "i-c": 0}

MERGED_SCRIPT = """\
echo "one on {{ACS::InstanceId}}"
echo "two to stderr" >&2
echo "three in {{ACS::RegionId}}"
case "{{ACS::InstanceId}}" in
  i-b) exit 3 ;;
  *) exit 0 ;;
esac
"""


async def test_script_on_three_agents_returns_each_merged_output_and_exit_code(stub: Stub) -> None:
    invoke_id = await run(stub, MERGED_SCRIPT, list(AGENTS), enable_parameter=True)

    seen = await watch(stub, invoke_id)

    for instance_id in AGENTS:
        expected = f"one on {instance_id}\ntwo to stderr\nthree in {REGION}\n".encode()
        assert bytes(seen.output[instance_id]) == expected
    by_instance = await results(stub, invoke_id)
    assert set(by_instance) == set(AGENTS)
    for instance_id, result in by_instance.items():
        assert result.exit_code == EXIT_BY_INSTANCE[instance_id]
        if EXIT_BY_INSTANCE[instance_id] == 0:
            assert result.state == pb.EXECUTION_STATE_SUCCESS
            assert result.error_code == ""
        else:
            assert result.state == pb.EXECUTION_STATE_FAILED
            assert result.error_code == "ExitCodeNonzero"
        # Finished does not mean succeeded: both are coarse FINISHED.
        assert result.invoke_record_status == pb.INVOKE_STATUS_FINISHED
        assert result.output == bytes(seen.output[instance_id])
        assert not result.truncated
        assert result.start_time.ToMilliseconds() <= result.finish_time.ToMilliseconds()
    overall = await invocation(stub, invoke_id)
    assert overall.invoke_status == pb.INVOKE_STATUS_FINISHED
    assert {m.instance_id: m.state for m in overall.invoke_instances} == {
        i: pb.EXECUTION_STATE_SUCCESS if code == 0 else pb.EXECUTION_STATE_FAILED
        for i, code in EXIT_BY_INSTANCE.items()
    }
    assert all(
        m.instance_invoke_status == pb.INVOKE_STATUS_FINISHED for m in overall.invoke_instances
    )


async def test_watch_delivers_the_first_line_before_the_second_exists(
    stub: Stub, tmp_path: Path
) -> None:
    # The script cannot write b before the test opens the gate, which it does only once the
    # first line has arrived: a watch that delivered output late would wait for ever (and
    # time out), not pass.
    gate = tmp_path / "gate"
    marker = tmp_path / "b-was-written"
    script = f"echo a; while [ ! -e {gate} ]; do sleep 0.05; done; touch {marker}; echo b"
    invoke_id = await run(stub, script, ["i-a"])
    stream = stub.WatchInvocation(pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    first_output = None
    states_before_output = []
    async for event in stream:
        if event.HasField("output"):
            first_output = event.output
            break
        states_before_output.append(event.state_change.state)
    assert first_output is not None
    assert first_output.data == b"a\n"
    assert first_output.offset == 0
    assert not marker.exists(), "the line arrived live, before the script wrote b"
    gate.touch()
    rest = bytearray()
    async for event in stream:
        if event.HasField("output"):
            rest += event.output.data
    assert bytes(rest) == b"b\n"
    assert marker.exists()


def timeless(events: list[pb.WatchInvocationResponse]) -> list[pb.WatchInvocationResponse]:
    """The events without their `time` (when the server sent them)."""
    copies = []
    for event in events:
        copy = pb.WatchInvocationResponse()
        copy.CopyFrom(event)
        if copy.HasField("state_change"):
            copy.state_change.ClearField("time")
        copies.append(copy)
    return copies


async def test_a_batched_watch_delivers_the_same_events_in_fewer_messages(stub: Stub) -> None:
    invoke_id = await run(stub, MERGED_SCRIPT, list(AGENTS), enable_parameter=True)
    live = await watch(stub, invoke_id, batch=True)
    # Once it is over, one look at the invocation holds everything: one message batched,
    # one message per event unbatched, the same events in the same order.
    batched = await watch(stub, invoke_id, batch=True)
    unbatched = await watch(stub, invoke_id)
    assert timeless(batched.events) == timeless(unbatched.events)
    assert batched.messages == 1
    assert unbatched.messages == len(unbatched.events) >= 2 * len(AGENTS)
    for instance_id in AGENTS:
        expected = f"one on {instance_id}\ntwo to stderr\nthree in {REGION}\n".encode()
        assert bytes(live.output[instance_id]) == expected
        assert bytes(batched.output[instance_id]) == expected
    assert {i: s.state for i, s in live.states.items()} == {
        i: s.state for i, s in unbatched.states.items()
    }
    assert live.messages <= len(live.events)


async def test_ten_mebibytes_of_random_bytes_come_back_byte_exact(
    stub: Stub, tmp_path: Path
) -> None:
    size = 10 * 1024 * 1024
    source = tmp_path / "random.bin"
    invoke_id = await run(stub, f"head -c {size} /dev/urandom > {source}; cat {source}", ["i-b"])
    seen = await watch(stub, invoke_id)

    expected = source.read_bytes()
    assert len(expected) == size
    data, last = await read_output(stub, invoke_id, "i-b")
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert last.total_size == size
    assert last.dropped == 0
    assert last.eof
    assert bytes(seen.output["i-b"]) == expected, "WatchInvocation delivered it whole too"
    batched = await watch(stub, invoke_id, batch=True)
    assert bytes(batched.output["i-b"]) == expected, "and in batches of at most a mebibyte"
    assert batched.messages >= size // (1024 * 1024)
    result = (await results(stub, invoke_id))["i-b"]
    assert result.state == pb.EXECUTION_STATE_SUCCESS
    assert result.output_size == size
    assert result.output == expected[-24 * 1024 :]
    assert result.truncated


async def test_output_past_the_cap_is_counted_in_dropped(stub: Stub, tmp_path: Path) -> None:
    cap = 10 * 1024 * 1024
    extra = 123_457
    source = tmp_path / "random.bin"
    invoke_id = await run(
        stub, f"head -c {cap + extra} /dev/urandom > {source}; cat {source}", ["i-c"]
    )
    await watch(stub, invoke_id)

    data, last = await read_output(stub, invoke_id, "i-c")
    assert data == source.read_bytes()[:cap]
    assert last.total_size == cap
    assert last.dropped == extra
    result = (await results(stub, invoke_id))["i-c"]
    assert result.state == pb.EXECUTION_STATE_SUCCESS
    assert result.dropped == extra


TREE_SCRIPT = """\
sleep 1000 &
echo "child $!"
setsid sleep 1000 &
echo "escaped $!"
sleep 1000
"""


def _pids(output: bytes) -> list[int]:
    return [int(line.split()[1]) for line in output.decode().splitlines()]


async def _wait_for_pids(stub: Stub, invoke_id: str, instances: int = 1) -> list[int]:
    """The pids that TREE_SCRIPT prints (two lines) on each of `instances` instances, followed
    live: output comes in chunks of any size, interleaved between instances."""
    stream = stub.WatchInvocation(pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    output: dict[str, bytearray] = {}
    async for event in stream:
        if event.HasField("output"):
            output.setdefault(event.output.instance_id, bytearray()).extend(event.output.data)
            printed = [o for o in output.values() if o.count(b"\n") >= 2]
            if len(printed) == instances:
                stream.cancel()
                break
    return [pid for o in output.values() for pid in _pids(bytes(o))]


async def test_timeout_kills_the_whole_process_tree(stub: Stub) -> None:
    invoke_id = await run(stub, TREE_SCRIPT, ["i-a"], timeout_seconds=6)
    pids = await _wait_for_pids(stub, invoke_id)
    assert not any(process_gone(pid) for pid in pids), "the children run before the timeout"

    seen = await watch(stub, invoke_id)

    change = seen.states["i-a"]
    assert change.state == pb.EXECUTION_STATE_TIMEOUT
    assert change.invoke_record_status == pb.INVOKE_STATUS_FAILED
    assert change.error_code == "ExecutionTimeout"
    assert all(process_gone(pid) for pid in pids), "no child outlives the timeout"
    assert (await invocation(stub, invoke_id)).invoke_status == pb.INVOKE_STATUS_FAILED


async def test_stop_terminates_a_running_script_and_its_children(stub: Stub) -> None:
    invoke_id = await run(stub, TREE_SCRIPT, ["i-b", "i-c"])
    pids = await _wait_for_pids(stub, invoke_id, instances=2)
    assert len(pids) == 4

    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    seen = await watch(stub, invoke_id)

    for instance_id in ("i-b", "i-c"):
        change = seen.states[instance_id]
        assert change.state == pb.EXECUTION_STATE_TERMINATED
        assert change.invoke_record_status == pb.INVOKE_STATUS_STOPPED
    assert all(process_gone(pid) for pid in pids)
    overall = await invocation(stub, invoke_id)
    assert overall.invoke_status == pb.INVOKE_STATUS_STOPPED
    by_instance = await results(stub, invoke_id)
    assert all(r.stop_time.ToMilliseconds() > 0 for r in by_instance.values())


# The script and its child ignore SIGTERM: only the SIGKILL after the grace ends them.
DEAF_SCRIPT = """\
trap '' TERM
sh -c 'trap "" TERM; while :; do sleep 1; done' &
echo "child $!"
echo "script $$"
while :; do sleep 1; done
"""


async def test_stop_kills_a_tree_that_ignores_sigterm_after_the_grace(stub: Stub) -> None:
    invoke_id = await run(stub, DEAF_SCRIPT, ["i-c"])
    pids = await _wait_for_pids(stub, invoke_id)
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    seen = await watch(stub, invoke_id)
    assert seen.states["i-c"].state == pb.EXECUTION_STATE_TERMINATED
    assert all(process_gone(pid) for pid in pids)
    record = (await results(stub, invoke_id))["i-c"]
    assert record.exit_code == 128 + 9, "ended by SIGKILL, not by SIGTERM"


async def test_stopping_a_finished_invocation_is_a_failed_precondition(stub: Stub) -> None:
    invoke_id = await run(stub, "true", ["i-a"])
    await watch(stub, invoke_id)
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = error_details(caught.value)
    assert info.reason == "InvalidStatus.Invocation"


async def test_stop_one_instance_leaves_the_others_running(stub: Stub) -> None:
    # i-a would run for a minute: only the stop can end it (a loaded machine cannot make
    # it end on its own first).
    script = (
        "echo started; case {{ACS::InstanceId}} in i-a) sleep 60;; *) sleep 3;; esac; echo done"
    )
    invoke_id = await run(stub, script, ["i-a", "i-b"], enable_parameter=True)
    await _wait_for_output(stub, invoke_id, {"i-a", "i-b"})
    await stub.StopInvocation(
        pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id, instance_ids=["i-a"])
    )
    seen = await watch(stub, invoke_id)
    assert seen.states["i-a"].state == pb.EXECUTION_STATE_TERMINATED
    assert seen.states["i-b"].state == pb.EXECUTION_STATE_SUCCESS
    assert bytes(seen.output["i-b"]) == b"started\ndone\n"
    # Finished mixed with Stopped is Finished (the seed's table).
    assert (await invocation(stub, invoke_id)).invoke_status == pb.INVOKE_STATUS_FINISHED


async def _wait_for_output(stub: Stub, invoke_id: str, instances: set[str]) -> None:
    stream = stub.WatchInvocation(pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    waiting = set(instances)
    async for event in stream:
        if event.HasField("output"):
            waiting.discard(event.output.instance_id)
            if not waiting:
                stream.cancel()
                return


async def test_environment_variables_reach_the_script(stub: Stub) -> None:
    env = {"GREETING": "hello wörld", "EMPTY": "", "LANG": "C"}
    invoke_id = await run(
        stub,
        'printf "%s|%s|%s|%s|" "$GREETING" "${EMPTY-unset}" "$LANG" "$CLOUDASSIST_INVOKE_ID"\n'
        'env | grep -c "^CLOUDASSIST_"',
        ["i-a", "i-b"],
        env=env,
    )
    seen = await watch(stub, invoke_id)
    for instance_id in ("i-a", "i-b"):
        assert seen.states[instance_id].state == pb.EXECUTION_STATE_SUCCESS
        assert bytes(seen.output[instance_id]).decode() == f"hello wörld||C|{invoke_id}|2\n"
    assert dict((await invocation(stub, invoke_id)).env) == env


async def test_a_launcher_runs_the_script_with_another_interpreter(stub: Stub) -> None:
    invoke_id = await run(
        stub,
        "import sys\nprint('python', 6 * 7, sys.argv[1:])",
        ["i-a"],
        launcher="python3 -u {{ACS::ScriptFile}} one 'two words'",
    )
    seen = await watch(stub, invoke_id)
    assert seen.states["i-a"].state == pb.EXECUTION_STATE_SUCCESS
    assert bytes(seen.output["i-a"]) == b"python 42 ['one', 'two words']\n"

    missing = await run(stub, "x", ["i-a"], launcher="no-such-interpreter {{ACS::ScriptFile}}")
    seen = await watch(stub, missing)
    assert seen.states["i-a"].state == pb.EXECUTION_STATE_INVALID
    assert seen.states["i-a"].error_code == "LauncherNotFound"


async def test_custom_parameters_are_filled_per_invocation(stub: Stub) -> None:
    created = await stub.CreateCommand(
        pb.CreateCommandRequest(
            region_id=REGION,
            name="greet",
            type=pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
            command_content=b"echo '{{greeting}}, {{ name }}' from {{ACS::InstanceId}} in "
            b"{{ACS::InvokeId}} of {{ACS::CommandId}}",
            enable_parameter=True,
        )
    )
    described = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, command_id=created.command_id)
    )
    assert list(described.commands[0].parameter_names) == ["greeting", "name"]
    invoked = await stub.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=REGION,
            command_id=created.command_id,
            instance_ids=["i-a", "i-c"],
            parameters={"greeting": "hello", "name": "wörld"},
        )
    )
    seen = await watch(stub, invoked.invoke_id)
    for instance_id in ("i-a", "i-c"):
        assert bytes(seen.output[instance_id]).decode() == (
            f"hello, wörld from {instance_id} in {invoked.invoke_id} of {created.command_id}\n"
        )
    described = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, command_id=created.command_id)
    )
    assert described.commands[0].invoke_times == 1


async def test_working_dir_and_shebang(stub: Stub, tmp_path: Path) -> None:
    invoke_id = await run(
        stub,
        "#!/usr/bin/env python3\nimport os\nprint(os.getcwd())\n",
        ["i-a"],
        working_dir=str(tmp_path),
    )
    seen = await watch(stub, invoke_id)
    assert bytes(seen.output["i-a"]) == f"{tmp_path}\n".encode()


async def test_missing_working_dir_makes_the_record_invalid(stub: Stub, tmp_path: Path) -> None:
    invoke_id = await run(stub, "pwd", ["i-a"], working_dir=str(tmp_path / "nope"))
    seen = await watch(stub, invoke_id)
    change = seen.states["i-a"]
    assert change.state == pb.EXECUTION_STATE_INVALID
    assert change.invoke_record_status == pb.INVOKE_STATUS_FAILED
    assert change.error_code == "DirectoryNotExists"


async def test_binary_output_is_kept_as_bytes(stub: Stub) -> None:
    invoke_id = await run(stub, r"printf '\377\000\376\n'", ["i-c"])
    seen = await watch(stub, invoke_id)
    assert bytes(seen.output["i-c"]) == b"\xff\x00\xfe\n"


async def test_describe_instances_shows_connected_agents(
    instances_stub: instance_pb2_grpc.InstanceServiceStub, cluster: Cluster
) -> None:
    response = await instances_stub.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=REGION, instance_ids=list(AGENTS))
    )
    assert {i.instance_id for i in response.instances} == set(AGENTS)
    for instance in response.instances:
        assert instance.online
        assert instance.os_type == instance_pb2.OS_TYPE_LINUX
        assert instance.agent_version
        assert instance.last_heartbeat_time.seconds > 0


async def test_running_tasks_count_as_active_on_their_instance(
    stub: Stub, instances_stub: instance_pb2_grpc.InstanceServiceStub
) -> None:
    invoke_id = await run(stub, "echo go; sleep 30", ["i-c"])
    await _wait_for_output(stub, invoke_id, {"i-c"})
    response = await instances_stub.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=REGION, instance_ids=["i-c"])
    )
    assert response.instances[0].active_task_count == 1
    await stub.StopInvocation(pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    await watch(stub, invoke_id)
    response = await instances_stub.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(region_id=REGION, instance_ids=["i-c"])
    )
    assert response.instances[0].active_task_count == 0


async def test_many_invocations_at_once_all_finish(stub: Stub) -> None:
    invoke_ids = await asyncio.gather(*(run(stub, f"echo {n}", list(AGENTS)) for n in range(20)))
    watched = await asyncio.gather(*(watch(stub, i) for i in invoke_ids))
    for n, seen in enumerate(watched):
        assert {bytes(v) for v in seen.output.values()} == {f"{n}\n".encode()}
        assert all(s.state == pb.EXECUTION_STATE_SUCCESS for s in seen.states.values())
