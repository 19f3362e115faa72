"""SendFile with real agents: files written whole, with their mode and owner, results per
instance, and every rule's error."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from cloudassist.v1.tag_pb2 import Tag
from tests.integration.helpers import REGION, error_details, watch
from tests.support import AgentProcess, ServerProcess, client_channel

Stub = command_pb2_grpc.CommandServiceStub


@dataclass
class Hosts:
    server: ServerProcess
    root: Path  # where the tests send files


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    workdir = tmp_path_factory.mktemp("send-file")
    server = ServerProcess(workdir / "server")
    agents = [AgentProcess(server, i, workdir) for i in ("f-1", "f-2")]
    for agent in agents:
        agent.extra = ["--tag", "files=yes"]
    server.start()
    try:
        for agent in agents:
            agent.start()
        yield Hosts(server, workdir / "files")
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


@pytest.fixture
async def stub(hosts: Hosts) -> AsyncIterator[Stub]:
    async with client_channel(hosts.server) as channel:
        yield command_pb2_grpc.CommandServiceStub(channel)


async def _results(stub: Stub, invoke_id: str) -> dict[str, pb.SendFileResult]:
    response = await stub.DescribeSendFileResults(
        pb.DescribeSendFileResultsRequest(region_id=REGION, invoke_id=invoke_id)
    )
    return {r.instance_id: r for r in response.results}


async def test_a_file_is_written_on_each_instance(stub: Stub, hosts: Hosts) -> None:
    target = hosts.root / "etc" / "app"  # missing: it is created
    content = bytes(range(256)) * 4
    sent = await stub.SendFile(
        pb.SendFileRequest(
            region_id=REGION,
            name="app.conf",
            target_dir=str(target),
            content=base64.b64encode(content),
            content_type=pb.CONTENT_TYPE_BASE64,
            file_mode="0640",
            file_owner="nobody",
            # Both agents run on this machine and write the same path.
            overwrite=True,
            resource_tags=[Tag(key="files", value="yes")],
        )
    )
    seen = await watch(stub, sent.invoke_id)
    assert {i: s.state for i, s in seen.states.items()} == {
        "f-1": pb.EXECUTION_STATE_SUCCESS,
        "f-2": pb.EXECUTION_STATE_SUCCESS,
    }
    path = target / "app.conf"
    assert path.read_bytes() == content
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640
    if os.geteuid() == 0:
        import pwd

        assert info.st_uid == pwd.getpwnam("nobody").pw_uid
    assert [p.name for p in target.iterdir()] == ["app.conf"], "no temporary file left"
    results = await _results(stub, sent.invoke_id)
    assert set(results) == {"f-1", "f-2"}
    assert all(r.name == "app.conf" and r.target_dir == str(target) for r in results.values())
    assert all(r.invoke_record_status == pb.INVOKE_STATUS_FINISHED for r in results.values())
    # A file push is not a command invocation.
    listed = await stub.DescribeInvocations(
        pb.DescribeInvocationsRequest(region_id=REGION, invoke_id=sent.invoke_id)
    )
    assert list(listed.invocations) == []


async def test_an_existing_file_is_kept_unless_overwrite(stub: Stub, hosts: Hosts) -> None:
    hosts.root.mkdir(parents=True, exist_ok=True)
    path = hosts.root / "motd"
    path.write_text("old\n")

    async def send(overwrite: bool) -> pb.SendFileResult:
        sent = await stub.SendFile(
            pb.SendFileRequest(
                region_id=REGION,
                name="motd",
                target_dir=str(hosts.root),
                content=b"new\n",
                overwrite=overwrite,
                instance_ids=["f-1"],
            )
        )
        await watch(stub, sent.invoke_id)
        return (await _results(stub, sent.invoke_id))["f-1"]

    refused = await send(overwrite=False)
    assert refused.state == pb.EXECUTION_STATE_INVALID
    assert refused.error_code == "FileAlreadyExists"
    assert path.read_text() == "old\n"
    replaced = await send(overwrite=True)
    assert replaced.state == pb.EXECUTION_STATE_SUCCESS
    assert path.read_text() == "new\n"


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"name": "a/b"}, "InvalidParameter.FileName", "name"),
        ({"name": ".."}, "InvalidParameter.FileName", "name"),
        ({"target_dir": "relative/dir"}, "InvalidParameter.TargetDir", "target_dir"),
        ({"target_dir": "/tmp/../etc"}, "InvalidParameter.TargetDir", "target_dir"),
        ({"content": b"x" * (32 * 1024 + 1)}, "Content.ExceedLimit", "content"),
        ({"content": b"not base64!", "content_type": pb.CONTENT_TYPE_BASE64},
         "InvalidParameter.Content", "content"),
        ({"file_mode": "999"}, "InvalidParameter.FileMode", "file_mode"),
        ({"file_owner": "bad name"}, "InvalidParameter.FileOwner", "file_owner"),
        ({"timeout_seconds": 5}, "InvalidTimeout.ExceedLimit", "timeout_seconds"),
        ({"instance_ids": []}, "MissingParameter.InstanceIds", "instance_ids"),
    ],
)  # fmt: skip
async def test_bad_requests_are_refused_and_write_nothing(
    stub: Stub, hosts: Hosts, fields: dict[str, object], reason: str, field: str
) -> None:
    request = pb.SendFileRequest(
        region_id=REGION, name="x.txt", target_dir="/tmp", content=b"x", instance_ids=["f-1"]
    )
    for name, value in fields.items():
        if isinstance(value, list):
            request.ClearField(name)  # type: ignore[arg-type]
        else:
            setattr(request, name, value)
    before = hosts.server.row_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.SendFile(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields_named = error_details(caught.value)
    assert (info.reason, fields_named) == (reason, [field])
    assert hosts.server.row_counts() == before
