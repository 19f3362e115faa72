"""--log-format json on a real server and real agents: every line is one JSON object, and the
lines about a run carry its ids as fields."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import REGION, run, watch
from tests.support import AgentProcess, Process, ServerProcess, client_channel, wait_until

INSTANCES = ("i-l1", "i-l2")
Line = dict[str, Any]


@dataclass
class Logged:
    server: ServerProcess
    agents: dict[str, AgentProcess]


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    workdir = tmp_path_factory.mktemp("logs")
    server = ServerProcess(workdir / "server", "--log-format", "json", "--min-timeout", "1")
    agents = {i: AgentProcess(server, i, workdir) for i in INSTANCES}
    for agent in agents.values():
        agent.extra = ["--log-format", "json"]
    server.start()
    try:
        for agent in agents.values():
            agent.start()
        yield Logged(server, agents)
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


@pytest.fixture
async def stub(logged: Logged) -> AsyncIterator[command_pb2_grpc.CommandServiceStub]:
    async with client_channel(logged.server) as channel:
        yield command_pb2_grpc.CommandServiceStub(channel)


def json_lines(process: Process) -> list[Line]:
    """Every whole line of the process's log, each parsed as JSON (a line that is not fails).
    A last line without its newline is still being written, and waits for the next look."""
    lines = []
    for number, text in enumerate(process.log().split("\n")[:-1], 1):
        try:
            line = json.loads(text)
        except json.JSONDecodeError as error:
            raise AssertionError(f"log line {number} is not JSON: {text!r}") from error
        assert isinstance(line, dict), text
        assert {"time", "level", "logger", "message"} <= line.keys(), text
        lines.append(line)
    return lines


def wait_for_lines(process: Process, wanted: Callable[[Line], bool], count: int) -> list[Line]:
    """The `count` lines `wanted` picks, once the process has logged them (it logs from
    another process, so the file is polled)."""
    found: list[Line] = []

    def logged() -> bool:
        found[:] = [line for line in json_lines(process) if wanted(line)]
        return len(found) >= count

    wait_until(logged, 10, f"{count} log lines")
    return found


async def test_a_run_is_logged_with_its_ids(
    logged: Logged, stub: command_pb2_grpc.CommandServiceStub
) -> None:
    invoke_id = await run(stub, "echo logged", list(INSTANCES))
    seen = await watch(stub, invoke_id)
    records = {i: s.record_id for i, s in seen.states.items()}
    assert set(records) == set(INSTANCES)
    server = logged.server

    def about_run(message: str) -> Callable[[Line], bool]:
        return lambda line: line["message"] == message and line.get("invoke_id") == invoke_id

    [created] = wait_for_lines(server, about_run("invocation created"), 1)
    assert created["level"] == "INFO"
    assert created["logger"] == "cloudassist.server.planes.invocations"
    assert created["instances"] == len(INSTANCES)
    assert created["command_id"].startswith("c-")
    dispatched = wait_for_lines(server, about_run("task dispatched"), len(INSTANCES))
    assert {line["instance_id"]: line["record_id"] for line in dispatched} == records

    def result_of_run(line: Line) -> bool:
        return (
            line["message"].startswith("record ended")
            and line.get("invoke_id") == invoke_id
            and line.get("record_id") in set(records.values())
        )

    stored = wait_for_lines(server, result_of_run, len(INSTANCES))
    assert {
        line["instance_id"]: (line["record_id"], line["state"], line["exit_code"])
        for line in stored
    } == {i: (r, "SUCCESS", 0) for i, r in records.items()}

    connected = {
        line["instance_id"]
        for line in json_lines(server)
        if line["message"].startswith("agent connected")
    }
    assert connected == set(INSTANCES)


async def test_a_stop_is_logged_with_its_ids(
    logged: Logged, stub: command_pb2_grpc.CommandServiceStub
) -> None:
    invoke_id = await run(stub, "echo started; sleep 60", ["i-l1"])
    stream = stub.WatchInvocation(pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    async for event in stream:
        if event.HasField("output"):  # the script runs
            stream.cancel()
            break
    await stub.StopInvocation(
        pb.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id, instance_ids=["i-l1"])
    )
    seen = await watch(stub, invoke_id)
    record_id = seen.states["i-l1"].record_id
    assert seen.states["i-l1"].state == pb.EXECUTION_STATE_TERMINATED
    server = logged.server

    [stop] = wait_for_lines(
        server,
        lambda line: (
            line["message"].startswith("stop requested") and line.get("invoke_id") == invoke_id
        ),
        1,
    )
    assert stop["instance_id"] == "i-l1"
    [stored] = wait_for_lines(
        server,
        lambda line: (
            line["message"].startswith("record ended")
            and (line.get("invoke_id"), line.get("record_id")) == (invoke_id, record_id)
        ),
        1,
    )
    assert (stored["instance_id"], stored["state"]) == ("i-l1", "TERMINATED")


async def test_an_agent_logs_json_lines_with_the_task_ids(
    logged: Logged, stub: command_pb2_grpc.CommandServiceStub
) -> None:
    invoke_id = await run(stub, "exit 3", ["i-l2"])
    seen = await watch(stub, invoke_id)
    record_id = seen.states["i-l2"].record_id
    agent = logged.agents["i-l2"]

    def about_task(line: Line) -> bool:
        return line.get("record_id") == record_id

    [ended] = wait_for_lines(agent, lambda line: about_task(line) and "ended" in line["message"], 1)
    assert ended["invoke_id"] == invoke_id
    assert ended["logger"] == "cloudassist.agent.tasks"
    assert ended["message"] == "task ended: finished, exit code 3"
    # The first line about the task.
    assert next(line for line in json_lines(agent) if about_task(line))["message"] == (
        "task accepted"
    )
    assert any(
        line.get("instance_id") == "i-l2" and line["message"].startswith("connected to")
        for line in json_lines(agent)
    )


async def test_a_timeout_is_logged_with_its_ids(
    logged: Logged, stub: command_pb2_grpc.CommandServiceStub
) -> None:
    invoke_id = await run(stub, "sleep 30", ["i-l1"], timeout_seconds=1)
    seen = await watch(stub, invoke_id)
    record_id = seen.states["i-l1"].record_id
    assert seen.states["i-l1"].state == pb.EXECUTION_STATE_TIMEOUT
    [ended] = wait_for_lines(
        logged.server,
        lambda line: (
            line["message"] == "record ended: TIMEOUT" and line.get("invoke_id") == invoke_id
        ),
        1,
    )
    assert (ended["instance_id"], ended["record_id"]) == ("i-l1", record_id)
    assert ended["error_code"] == "ExecutionTimeout"
