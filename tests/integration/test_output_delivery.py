"""--output-dir and --output-bucket: every finished record's whole output, and a summary,
copied to a directory and to an S3-compatible bucket (moto's server, on loopback)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import REGION, run, watch
from tests.support import AgentProcess, ServerProcess, client_channel, wait_until

BUCKET = "outputs"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class Delivering:
    server: ServerProcess
    out: Path
    s3: Any  # a boto3 client of the bucket's server


@pytest.fixture(scope="module")
def delivering(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivering]:
    import boto3
    from moto.server import ThreadedMotoServer

    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3_server.start()
    host, port = s3_server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=BUCKET)
    workdir = tmp_path_factory.mktemp("delivery")
    out = workdir / "outputs"
    server = ServerProcess(
        workdir / "server",
        "--output-dir", str(out),
        "--output-bucket", f"s3://{BUCKET}/records",
        "--output-s3-endpoint", endpoint,
        "--min-timeout", "1",
    )  # fmt: skip
    server.env = S3_CREDENTIALS
    agent = AgentProcess(server, "i-out", workdir)
    server.start()
    try:
        agent.start()
        yield Delivering(server, out, s3)
    finally:
        agent.stop()
        server.stop()
        s3_server.stop()


def _delivered(delivering: Delivering, invoke_id: str) -> tuple[bytes, dict[str, object]]:
    """The copied output and summary, once the server has marked the record delivered (to
    the directory and the bucket)."""

    def marked() -> bool:
        rows = delivering.server.query(
            f"SELECT delivered FROM records WHERE invoke_id = '{invoke_id}'"
        )
        return bool(rows) and all(bool(r[0]) for r in rows)

    wait_until(marked, 30, f"the copy of {invoke_id}")
    folder = delivering.out / invoke_id / "i-out"
    (summary_path,) = folder.glob("*.json")
    summary = json.loads(summary_path.read_text())
    return summary_path.with_suffix(".out").read_bytes(), summary


async def test_finished_output_is_copied_byte_for_byte(delivering: Delivering) -> None:
    async with client_channel(delivering.server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        invoke_id = await run(stub, "head -c 3000000 /dev/urandom; exit 4", ["i-out"])
        seen = await watch(stub, invoke_id)
    data, summary = await asyncio.to_thread(_delivered, delivering, invoke_id)
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
    # The same in the bucket.
    (record_id,) = (p.stem for p in (delivering.out / invoke_id / "i-out").glob("*.out"))
    key = f"records/{invoke_id}/i-out/{record_id}"
    stored = delivering.s3.get_object(Bucket=BUCKET, Key=f"{key}.out")["Body"].read()
    assert stored == data
    meta = json.loads(delivering.s3.get_object(Bucket=BUCKET, Key=f"{key}.json")["Body"].read())
    assert meta == summary


async def test_a_timed_out_record_is_copied_with_what_it_printed(delivering: Delivering) -> None:
    async with client_channel(delivering.server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        invoke_id = await run(stub, "echo before; sleep 30", ["i-out"], timeout_seconds=1)
        seen = await watch(stub, invoke_id)
    assert seen.states["i-out"].state == pb.EXECUTION_STATE_TIMEOUT
    data, summary = await asyncio.to_thread(_delivered, delivering, invoke_id)
    assert data == b"before\n"
    assert summary["state"] == "TIMEOUT"
    assert summary["error_code"] == "ExecutionTimeout"


def test_a_bucket_that_is_not_s3_is_refused_at_start(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", "--output-bucket", "https://example/bucket")
    with pytest.raises(RuntimeError, match="is not s3://BUCKET"):
        server.start()
    server.stop()
