"""--output-dir: every finished record's whole output, and a summary, copied to a directory."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import REGION, run, watch
from tests.support import AgentProcess, ServerProcess, client_channel, wait_until


@dataclass
class Delivering:
    server: ServerProcess
    out: Path


@pytest.fixture(scope="module")
def delivering(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivering]:
    workdir = tmp_path_factory.mktemp("delivery")
    out = workdir / "outputs"
    server = ServerProcess(workdir / "server", "--output-dir", str(out), "--min-timeout", "1")
    agent = AgentProcess(server, "i-out", workdir)
    server.start()
    try:
        agent.start()
        yield Delivering(server, out)
    finally:
        agent.stop()
        server.stop()


def _delivered(out: Path, invoke_id: str) -> tuple[bytes, dict[str, object]]:
    folder = out / invoke_id / "i-out"
    wait_until(lambda: any(folder.glob("*.json")), 30, f"the copy of {invoke_id}")
    (summary_path,) = folder.glob("*.json")
    summary = json.loads(summary_path.read_text())
    return summary_path.with_suffix(".out").read_bytes(), summary


async def test_finished_output_is_copied_byte_for_byte(delivering: Delivering) -> None:
    async with client_channel(delivering.server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        invoke_id = await run(stub, "head -c 3000000 /dev/urandom; exit 4", ["i-out"])
        seen = await watch(stub, invoke_id)
    data, summary = await asyncio.to_thread(_delivered, delivering.out, invoke_id)
    assert hashlib.sha256(data).digest() == hashlib.sha256(bytes(seen.output["i-out"])).digest()
    assert len(data) == 3_000_000
    assert summary["state"] == "FAILED"
    assert summary["exit_code"] == 4
    assert summary["invoke_id"] == invoke_id
    assert summary["region_id"] == REGION
    assert summary["output_size"] == 3_000_000
    assert not list((delivering.out / invoke_id).rglob(".*.tmp")), "no half-written file left"
    rows = delivering.server.query(f"SELECT delivered FROM records WHERE invoke_id = '{invoke_id}'")
    assert [bool(r[0]) for r in rows] == [True]


async def test_a_timed_out_record_is_copied_with_what_it_printed(delivering: Delivering) -> None:
    async with client_channel(delivering.server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        invoke_id = await run(stub, "echo before; sleep 30", ["i-out"], timeout_seconds=1)
        seen = await watch(stub, invoke_id)
    assert seen.states["i-out"].state == pb.EXECUTION_STATE_TIMEOUT
    data, summary = await asyncio.to_thread(_delivered, delivering.out, invoke_id)
    assert data == b"before\n"
    assert summary["state"] == "TIMEOUT"
    assert summary["error_code"] == "ExecutionTimeout"
