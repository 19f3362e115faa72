"""SendFile with names and directories as users choose them: not ASCII, as long as the file
system allows (255 bytes a name), to instances in any order."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import error_details, watch
from tests.integration.user_shaped.conftest import HOME, Fleet

CONTENT = "schlüssel = 値\n".encode()


@pytest.mark.parametrize(
    "name",
    ["n" * 255, "設定" * 42 + ".c", "ü" * 127 + "x"],
    ids=["ascii-255-bytes", "cjk-254-bytes", "latin-255-bytes"],
)
async def test_a_file_named_up_to_the_file_systems_limit_is_written(
    fleet: Fleet, admin: aio.Channel, name: str
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    target = fleet.workdir / "配置 ü" / name[:3]
    sent = await stub.SendFile(
        pb.SendFileRequest(
            region_id=HOME, name=name, target_dir=str(target), content=CONTENT,
            # Both agents run on this machine and write the same path.
            overwrite=True, instance_ids=["u-c", "u-a"],
        )
    )  # fmt: skip
    seen = await watch(stub, sent.invoke_id, HOME)
    assert {i: (s.state, s.error_info) for i, s in seen.states.items()} == {
        "u-a": (pb.EXECUTION_STATE_SUCCESS, ""),
        "u-c": (pb.EXECUTION_STATE_SUCCESS, ""),
    }
    assert (target / name).read_bytes() == CONTENT
    assert [p.name for p in target.iterdir()] == [name], "no temporary file left"


async def test_a_name_longer_than_255_bytes_is_refused_before_anything_is_made(
    fleet: Fleet, admin: aio.Channel
) -> None:
    stub = command_pb2_grpc.CommandServiceStub(admin)
    name = "設定" * 43  # 86 characters, 258 bytes
    before = fleet.server.resource_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.SendFile(
            pb.SendFileRequest(
                region_id=HOME, name=name, target_dir=str(fleet.workdir / "too-long"),
                content=CONTENT, instance_ids=["u-a"],
            )
        )  # fmt: skip
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, fields = error_details(caught.value)
    assert (info.reason, fields) == ("InvalidParameter.FileName", ["name"])
    assert "255 bytes" in (caught.value.details() or "")
    assert fleet.server.resource_counts() == before
