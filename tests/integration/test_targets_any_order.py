"""Targets in any order: every record runs exactly once, on its own instance.

Users list instance ids in the order they think of them (the console's picker, a script's
loop, tags), not sorted. Each script here appends a line to a log naming the task, the
instance the server filled in for `{{ACS::InstanceId}}` and the script's own path, which lies
in the state directory of the agent that really ran it; the tests read that log back.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from cloudassist.v1.tag_pb2 import Tag
from tests.integration.helpers import REGION
from tests.support import AgentProcess, ServerProcess

# Not sorted on purpose: the agents register in this order.
AGENT_TAGS = {
    "i-e": ["pool=blue"],
    "i-b": ["pool=green"],
    "i-f": ["pool=blue"],
    "i-a": ["pool=green"],
    "i-d": ["pool=blue"],
    "i-c": ["pool=green"],
}
INSTANCE_IDS = list(AGENT_TAGS)
POOLS = {"blue": ["i-e", "i-f", "i-d"], "green": ["i-b", "i-a", "i-c"]}
WATCH_SECONDS = 40.0
SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT
RAN = {pb.EXECUTION_STATE_SUCCESS, pb.EXECUTION_STATE_FAILED}
LINE = re.compile(r"^(?P<task>\S+) (?P<meant>\S+) (?P<path>\S+)$")


@dataclass
class Fleet:
    server: ServerProcess
    agents: dict[str, AgentProcess]
    log: Path
    channel: grpc.Channel

    @property
    def stub(self) -> command_pb2_grpc.CommandServiceStub:
        return command_pb2_grpc.CommandServiceStub(self.channel)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("any-order")
    server = ServerProcess(workdir / "server", "--min-timeout", "1")
    agents = {}
    for instance_id, tags in AGENT_TAGS.items():
        agents[instance_id] = AgentProcess(server, instance_id, workdir)
        agents[instance_id].extra = [arg for tag in tags for arg in ("--tag", tag)]
    server.start()
    try:
        for agent in agents.values():
            agent.start()
        with server.sync_channel() as channel:
            yield Fleet(server, agents, workdir / "ran.log", channel)
    finally:
        for agent in agents.values():
            agent.stop()
        server.stop()


def _script(log: Path, failing: set[str]) -> str:
    """Logs who ran it; fails (exit 7) on the instances in `failing`."""
    fail = "|".join(sorted(failing)) or "none"
    return (
        f'echo "$CLOUDASSIST_TASK_ID {{{{ACS::InstanceId}}}} $0" >> {log}\n'
        f'case "{{{{ACS::InstanceId}}}}" in {fail}) exit 7;; esac\n'
    )


def _lines(log: Path) -> list[re.Match[str]]:
    if not log.exists():
        return []
    return [m for m in map(LINE.match, log.read_text().splitlines()) if m is not None]


def _watch_to_end(fleet: Fleet, invoke_id: str) -> None:
    """Follows the invocation until the server ends the stream (every record over), or for
    WATCH_SECONDS: the checks that follow then say what is left undone."""
    responses = fleet.stub.WatchInvocation(
        pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id, batch=True),
        metadata=fleet.server.metadata,
        timeout=WATCH_SECONDS,
    )
    try:
        for _ in responses:
            pass
    except grpc.RpcError as error:
        if error.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
            raise


def _records(fleet: Fleet, invoke_id: str) -> list[pb.InvocationResult]:
    response = fleet.stub.DescribeInvocationResults(
        pb.DescribeInvocationResultsRequest(
            region_id=REGION, invoke_id=invoke_id, include_history=True, page_size=50
        ),
        metadata=fleet.server.metadata,
    )
    return list(response.invocation_results)


def _check_ran_where_meant(fleet: Fleet, invoke_id: str, targets: list[str]) -> None:
    """Every target has one record; each record that ran did so once, on its own instance;
    none is left PENDING."""
    records = _records(fleet, invoke_id)
    assert sorted(r.instance_id for r in records) == sorted(targets), records
    by_task = {r.record_id: r for r in records}
    ran = [m for m in _lines(fleet.log) if m["task"] in by_task]
    for line in ran:
        record = by_task[line["task"]]
        assert line["meant"] == record.instance_id, line.group(0)
        # The script's path lies in the state directory of the agent that ran it.
        assert f"/agent-{record.instance_id}/" in line["path"], (
            f"task {line['task']} meant for {record.instance_id} ran at {line['path']}"
        )
    tasks_run = [line["task"] for line in ran]
    assert len(tasks_run) == len(set(tasks_run)), f"a task ran twice: {tasks_run}"
    for record in records:
        assert record.state != pb.EXECUTION_STATE_PENDING, record
        assert (record.record_id in tasks_run) == (record.state in RAN), record


def _invoke(fleet: Fleet, script: str, instance_ids: list[str], **fields: object) -> str:
    command_id = fleet.stub.CreateCommand(
        pb.CreateCommandRequest(
            region_id=REGION,
            name="who-ran-it",
            type=SHELL,
            command_content=script.encode(),
            enable_parameter=True,
        ),
        metadata=fleet.server.metadata,
    ).command_id
    try:
        return fleet.stub.InvokeCommand(
            pb.InvokeCommandRequest(
                region_id=REGION,
                command_id=command_id,
                instance_ids=instance_ids,
                **fields,  # type: ignore[arg-type]
            ),
            metadata=fleet.server.metadata,
        ).invoke_id
    finally:
        # The invocation keeps what it runs; the region's command quota stays free.
        fleet.stub.DeleteCommand(
            pb.DeleteCommandRequest(region_id=REGION, command_id=command_id),
            metadata=fleet.server.metadata,
        )


def test_the_issue_example_runs_each_script_on_its_own_instance(fleet: Fleet) -> None:
    """InvokeCommand on ["i-c", "i-a", "i-b"] with max_concurrency 1: the record meant for
    i-a was sent to i-c (the first dispatch paired with the first id of the request)."""
    targets = ["i-c", "i-a", "i-b"]
    invoke_id = _invoke(fleet, _script(fleet.log, set()), targets, max_concurrency="1")
    _watch_to_end(fleet, invoke_id)
    _check_ran_where_meant(fleet, invoke_id, targets)
    states = {r.instance_id: r.state for r in _records(fleet, invoke_id)}
    assert states == dict.fromkeys(targets, pb.EXECUTION_STATE_SUCCESS)
    assert "not one of its tasks" not in fleet.server.log()


rate_limits = st.one_of(
    st.just(""),
    st.integers(1, 7).map(str),
    st.integers(1, 100).map(lambda p: f"{p}%"),
)
error_limits = st.one_of(
    st.just(""),
    st.integers(0, 6).map(str),
    st.integers(0, 100).map(lambda p: f"{p}%"),
)


@st.composite
def invocations(draw: st.DrawFn) -> dict[str, object]:
    by_tag = draw(st.booleans())
    if by_tag:
        pool = draw(st.sampled_from(sorted(POOLS)))
        targets = POOLS[pool]
    else:
        targets = draw(st.lists(st.sampled_from(INSTANCE_IDS), min_size=1, unique=True))
        pool = ""
    # Rate control is for invocations that run once (a schedule's fires are refused it).
    scheduled = draw(st.booleans())
    return {
        "targets": targets,
        "pool": pool,
        "failing": draw(st.sets(st.sampled_from(targets))),
        "max_concurrency": "" if scheduled else draw(rate_limits),
        "max_errors": "" if scheduled else draw(error_limits),
        "scheduled": scheduled,
        "run_command": draw(st.booleans()),
    }


def _start(fleet: Fleet, case: dict[str, object]) -> str:
    targets = case["targets"]
    assert isinstance(targets, list)
    failing = case["failing"]
    assert isinstance(failing, set)
    script = _script(fleet.log, failing)
    fields: dict[str, object] = {
        "max_concurrency": case["max_concurrency"],
        "max_errors": case["max_errors"],
    }
    if case["pool"]:
        fields["resource_tags"] = [Tag(key="pool", value=str(case["pool"]))]
    else:
        fields["instance_ids"] = targets
    if case["scheduled"]:
        # A one-shot schedule two seconds ahead: the records are made when it fires.
        at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=2)
        fields["repeat_mode"] = pb.REPEAT_MODE_PERIOD
        fields["frequency"] = f"at({at:%Y-%m-%d %H:%M:%S} UTC)"
    if case["run_command"]:
        return fleet.stub.RunCommand(
            pb.RunCommandRequest(
                region_id=REGION,
                type=SHELL,
                command_content=script.encode(),
                enable_parameter=True,
                **fields,  # type: ignore[arg-type]
            ),
            metadata=fleet.server.metadata,
        ).invoke_id
    instance_ids = fields.pop("instance_ids", [])
    assert isinstance(instance_ids, list)
    return _invoke(fleet, script, instance_ids, **fields)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=invocations())
def test_any_order_runs_every_record_once_on_its_own_instance(
    fleet: Fleet, case: dict[str, object]
) -> None:
    invoke_id = _start(fleet, case)
    _watch_to_end(fleet, invoke_id)
    targets = case["targets"]
    assert isinstance(targets, list)
    _check_ran_where_meant(fleet, invoke_id, targets)
    if not case["max_errors"]:
        # Without an error budget every record runs and ends with its own exit code.
        failing = case["failing"]
        assert isinstance(failing, set)
        states = {r.instance_id: r.state for r in _records(fleet, invoke_id)}
        assert states == {
            i: pb.EXECUTION_STATE_FAILED if i in failing else pb.EXECUTION_STATE_SUCCESS
            for i in targets
        }


def test_no_report_was_refused_as_another_instances(fleet: Fleet) -> None:
    """Runs after the others in this module: no agent ever reported on another's task."""
    assert _lines(fleet.log), "the tests above ran scripts"
    assert "not one of its tasks" not in fleet.server.log()
