"""Prometheus metrics on --metrics-listen, scraped over HTTP from a real server with real agents."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import REGION, run, watch
from tests.postgres import PostgresServer
from tests.support import AgentProcess, ServerProcess, client_channel, wait_until

RUN_COMMAND = "/cloudassist.v1.CommandService/RunCommand"
DESCRIBE_INVOCATIONS = "/cloudassist.v1.CommandService/DescribeInvocations"
WATCH_INVOCATION = "/cloudassist.v1.CommandService/WatchInvocation"
INSTANCES = ("i-m1", "i-m2")
PRINTED = 1234  # bytes of output each instance's script prints

# (sample name, its labels) -> value
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_text(server: ServerProcess) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def scrape(server: ServerProcess) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics_text(server))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled counter not created yet (nothing counted)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def increase(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def scrape_until(server: ServerProcess, settled: Callable[[Samples], bool]) -> Samples:
    """The first scrape `settled` accepts (within a deadline)."""
    deadline = time.monotonic() + 10
    while True:
        samples = await asyncio.to_thread(scrape, server)
        if settled(samples):
            return samples
        if time.monotonic() > deadline:
            raise TimeoutError("the metrics did not settle in 10 s")
        await asyncio.sleep(0.02)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "server", "--metrics-listen", "127.0.0.1:0")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def agents(tmp_path: Path, server: ServerProcess) -> Iterator[dict[str, AgentProcess]]:
    started = {i: AgentProcess(server, i, tmp_path) for i in INSTANCES}
    try:
        for agent in started.values():
            agent.start()
        yield started
    finally:
        for agent in started.values():
            agent.stop()


@pytest.fixture
async def stub(server: ServerProcess) -> AsyncIterator[command_pb2_grpc.CommandServiceStub]:
    async with client_channel(server) as channel:
        yield command_pb2_grpc.CommandServiceStub(channel)


def test_the_ready_file_names_the_metrics_port_and_every_metric_is_served(
    server: ServerProcess,
) -> None:
    assert server.metrics_port not in (0, server.port, server.agent_port)
    families = {f.name for f in text_string_to_metric_families(metrics_text(server))}
    assert {
        "cloudassist_agents_connected",
        "cloudassist_rpcs",
        "cloudassist_rpc_duration_seconds",
        "cloudassist_dispatch_latency_seconds",
        "cloudassist_records",
        "cloudassist_output_bytes",
        "cloudassist_db_flush_seconds",
        "cloudassist_agent_reports",
        "cloudassist_serving",
        "cloudassist_agent_messages",
        "cloudassist_db_transactions",
    } <= families


def test_agents_connected_follows_the_agent_streams(
    server: ServerProcess, agents: dict[str, AgentProcess]
) -> None:
    def connected() -> float:
        return value(scrape(server), "cloudassist_agents_connected")

    wait_until(lambda: connected() == len(INSTANCES), 10, "both agents counted")
    agents["i-m2"].stop()
    wait_until(lambda: connected() == 1, 10, "the stopped agent no longer counted")


async def test_a_run_is_counted_by_every_metric(
    server: ServerProcess,
    agents: dict[str, AgentProcess],
    stub: command_pb2_grpc.CommandServiceStub,
) -> None:
    before = await asyncio.to_thread(scrape, server)
    invoke_id = await run(stub, f"printf '%0{PRINTED}d' 0", list(INSTANCES))
    seen = await watch(stub, invoke_id)
    assert {i: len(seen.output[i]) for i in INSTANCES} == dict.fromkeys(INSTANCES, PRINTED)
    assert {i: s.state for i, s in seen.states.items()} == dict.fromkeys(
        INSTANCES, pb.EXECUTION_STATE_SUCCESS
    )
    with pytest.raises(aio.AioRpcError) as missing:
        await run(stub, "true", ["i-missing"])
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(aio.AioRpcError) as invalid:
        await stub.DescribeInvocations(
            pb.DescribeInvocationsRequest(region_id=REGION, page_token="not a page token")
        )
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # grpcio sends an aborted call's status before the handler unwinds to the interceptor, so
    # the client can hear of the rejection a moment before it is counted.
    rejected = [(RUN_COMMAND, "NOT_FOUND"), (DESCRIBE_INVOCATIONS, "INVALID_ARGUMENT")]
    after = await scrape_until(
        server,
        lambda now: all(
            increase(before, now, "cloudassist_rpcs_total", method=m, code=c) for m, c in rejected
        ),
    )

    def grew(name: str, **labels: str) -> float:
        return increase(before, after, name, **labels)

    assert grew("cloudassist_rpcs_total", method=RUN_COMMAND, code="OK") == 1
    assert grew("cloudassist_rpcs_total", method=RUN_COMMAND, code="NOT_FOUND") == 1
    assert grew("cloudassist_rpcs_total", method=DESCRIBE_INVOCATIONS, code="INVALID_ARGUMENT") == 1
    assert grew("cloudassist_rpcs_total", method=DESCRIBE_INVOCATIONS, code="OK") == 0
    assert grew("cloudassist_rpcs_total", method=WATCH_INVOCATION, code="OK") == 1
    # Unary calls are timed, the accepted and the rejected alike.
    assert grew("cloudassist_rpc_duration_seconds_count", method=RUN_COMMAND) == 2
    assert grew("cloudassist_dispatch_latency_seconds_count") == len(INSTANCES)
    assert grew("cloudassist_output_bytes_total") == len(INSTANCES) * PRINTED
    assert grew("cloudassist_records", state="SUCCESS") == len(INSTANCES)
    assert value(after, "cloudassist_records", state="RUNNING") == 0
    assert value(after, "cloudassist_db_flush_seconds_count") > 0
    # At least a start, some output and a result from each agent.
    assert grew("cloudassist_agent_reports_total") >= 3 * len(INSTANCES)
    assert value(after, "cloudassist_serving") == 1
    # The run's writes: its invocation (audit row included), then the agents' reports in
    # batches; a batch that failed and was retried report by report would show in the log.
    assert grew("cloudassist_db_transactions_total", kind="write") >= 2
    assert grew("cloudassist_db_transactions_total", kind="read") >= 1
    assert "agent reports failed" not in server.log()


def test_a_metrics_port_in_use_stops_the_server_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = ServerProcess(tmp_path / "server", "--metrics-listen", f"127.0.0.1:{port}")
        try:
            with pytest.raises(RuntimeError, match="server exited early"):
                process.start()
        finally:
            exit_code = process.stop()
    log = process.log()
    assert exit_code == 1, log
    assert (
        f"cloudassist-server: --metrics-listen 127.0.0.1:{port}: cannot listen: "
        "Address already in use"
    ) in log
    assert "Traceback" not in log
    assert not process.ready_file.exists()


def test_a_scrape_does_not_wait_for_a_locked_records_table(tmp_path: Path) -> None:
    """On PostgreSQL a lock on `records` (a migration, a VACUUM FULL) must not hold the scrape:
    the count gives up after its bound and the other metrics are served."""
    postgres = PostgresServer()
    postgres.start()
    try:
        url = postgres.new_database()
        server = ServerProcess(tmp_path / "server", "--metrics-listen", "127.0.0.1:0", db_url=url)
        server.start()
        try:
            database = url.rsplit("/", 1)[1]
            with psycopg.connect(postgres.dsn(database)) as locker:
                # Held until this transaction ends, as an ALTER TABLE would hold it.
                locker.execute("LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
                locked = scrape(server)  # urllib gives up after 10 s
            assert value(locked, "cloudassist_serving") == 1
            assert not [name for name, _ in locked if name == "cloudassist_records"]

            unlocked = scrape(server)
            assert value(unlocked, "cloudassist_records", state="PENDING") == 0
            assert ("cloudassist_records", frozenset({("state", "PENDING")})) in unlocked
        finally:
            server.stop()
    finally:
        postgres.stop()
