"""A Node.js client (@grpc/grpc-js, protos loaded at run time by @grpc/proto-loader) against
the real server: tests/interop/flow.mjs creates, invokes, watches and reads results, makes a
rejected request, and prints what it saw as JSON."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.conftest import Cluster
from tests.integration.helpers import REGION, error_details, read_output

INTEROP = Path(__file__).resolve().parents[1] / "interop"
FLOW = INTEROP / "flow.mjs"
# googleapis-common-protos ships google/rpc/*.proto beside its Python modules.
GOOGLE_PROTOS = Path(status_pb2.__file__).parents[2]
INSTANCES = ["i-a", "i-b"]
SCRIPT = 'echo "{{greeting}} from {{ACS::InstanceId}}"; printf "\\377\\000bytes\\n"; exit 5'
FLOW_SECONDS = 60


def expected_output(instance_id: str) -> bytes:
    return f"hi from {instance_id}\n".encode() + b"\xff\x00bytes\n"


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("node is not installed: the interop test needs Node.js 18 or later")
    if not (INTEROP / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("tests/interop/node_modules is missing: run `make interop-deps` (npm ci)")
    return path


async def run_flow(cluster: Cluster, *args: str) -> dict[str, Any]:
    assert (GOOGLE_PROTOS / "google" / "rpc" / "status.proto").is_file(), GOOGLE_PROTOS
    proc = await asyncio.create_subprocess_exec(
        node(),
        str(FLOW),
        "--server",
        cluster.server.address,
        "--region",
        REGION,
        "--include",
        str(GOOGLE_PROTOS),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CLOUDASSIST_API_KEY": cluster.server.admin_key},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), FLOW_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    summary: dict[str, Any] = json.loads(out)
    return summary


@pytest.fixture(scope="module")
async def summary(cluster: Cluster) -> dict[str, Any]:
    instances = [arg for i in INSTANCES for arg in ("--instance", i)]
    return await run_flow(cluster, *instances, "--script", SCRIPT, "--param", "greeting=hi")


async def test_the_node_client_creates_the_command_it_invokes(
    summary: dict[str, Any], stub: command_pb2_grpc.CommandServiceStub
) -> None:
    command_id = summary["command_id"]
    response = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, command_id=command_id)
    )
    assert [c.name for c in response.commands] == ["node-interop"]
    assert response.commands[0].command_content == SCRIPT.encode()
    assert summary["invoke_id"].startswith("t-")


async def test_the_node_client_streams_each_instances_output_whole(
    summary: dict[str, Any], stub: command_pb2_grpc.CommandServiceStub
) -> None:
    watched = summary["watched"]
    streamed = {i: base64.b64decode(data) for i, data in watched["output"].items()}
    assert streamed == {i: expected_output(i) for i in INSTANCES}
    for instance_id in INSTANCES:
        stored, _ = await read_output(stub, summary["invoke_id"], instance_id)
        assert stored == streamed[instance_id]
        chunks = [e for e in watched["events"] if e["kind"] == "output"]
        mine = [c for c in chunks if c["instance_id"] == instance_id]
        offsets = [c["offset"] for c in mine]
        sizes = [c["size"] for c in mine]
        assert offsets == [sum(sizes[:n]) for n in range(len(sizes))], "in order, no gaps"


async def test_the_node_client_sees_final_states_and_results(summary: dict[str, Any]) -> None:
    final = summary["watched"]["final"]
    assert set(final) == set(INSTANCES)
    for state in final.values():
        assert state == {
            "state": "EXECUTION_STATE_FAILED",
            "invoke_record_status": "INVOKE_STATUS_FINISHED",
            "invoke_status": state["invoke_status"],
            "exit_code": 5,
            "error_code": "ExitCodeNonzero",
        }
    # The stream ends once every record is over, so the last change shows the whole invocation.
    changes = [e for e in summary["watched"]["events"] if e["kind"] == "state_change"]
    assert final[changes[-1]["instance_id"]]["invoke_status"] == "INVOKE_STATUS_FINISHED"

    results = {r["instance_id"]: r for r in summary["results"]}
    assert set(results) == set(INSTANCES)
    for instance_id, result in results.items():
        assert base64.b64decode(result["output"]) == expected_output(instance_id)
        assert result["exit_code"] == 5
        assert result["state"] == "EXECUTION_STATE_FAILED"
        assert result["invoke_record_status"] == "INVOKE_STATUS_FINISHED"
        assert result["error_code"] == "ExitCodeNonzero"


async def test_the_node_client_decodes_rich_error_details(
    summary: dict[str, Any], stub: command_pb2_grpc.CommandServiceStub
) -> None:
    rejected = summary["rejected"]
    assert rejected is not None, "the server accepted a timeout past its limit"
    assert rejected["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert rejected["code_name"] == "INVALID_ARGUMENT"
    status = rejected["status"]
    assert status["code"] == rejected["code"]
    assert status["message"] == rejected["message"]
    details = {d["type"]: d["value"] for d in status["details"]}
    assert set(details) == {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}

    # What the Python client reads from the same request.
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.CreateCommand(
            pb.CreateCommandRequest(
                region_id=REGION,
                name="python-rejected",
                type=pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
                command_content=b"true",
                timeout_seconds=999_999,
            )
        )
    info, fields = error_details(caught.value)
    assert rejected["message"] == caught.value.details()
    assert details["google.rpc.ErrorInfo"]["reason"] == info.reason == "InvalidTimeout.ExceedLimit"
    assert details["google.rpc.ErrorInfo"]["domain"] == info.domain
    violations = details["google.rpc.BadRequest"]["field_violations"]
    assert [v["field"] for v in violations] == fields == ["timeout_seconds"]


async def test_the_node_client_without_a_key_is_unauthenticated(summary: dict[str, Any]) -> None:
    unauthenticated = summary["unauthenticated"]
    assert unauthenticated is not None, "a call without an API key was answered"
    assert unauthenticated["code_name"] == "UNAUTHENTICATED"
    assert unauthenticated["status"]["details"][0]["type"] == "google.rpc.ErrorInfo"
