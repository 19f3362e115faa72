"""server/api/wire.py: the wire-format check of requests whose type has no fields."""

from __future__ import annotations

import re

import pytest
from google.protobuf.message import DecodeError

from cloudassist.server.api.registration import decode
from cloudassist.server.api.wire import check_wire_format
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import instance_pb2

# Every wire type, a nested message, a group, unknown field numbers: all well formed.
WELL_FORMED = pb.Invocation(
    invoke_id="t-1",
    timeout_seconds=2**62,
    parameters={"a": "b"},
    invoke_instances=[pb.InvokeInstance(instance_id="i-1", exit_code=-1)],
).SerializeToString() + bytes(
    [0x09, *b"\x01" * 8, 0x15, *b"\x02" * 4, 0xFB, 0xFF, 0xFF, 0xFF, 0x0F,  # 64, 32 bits; group
     0x08, 0x01, 0xFC, 0xFF, 0xFF, 0xFF, 0x0F]  # a varint in it; the group's end
)  # fmt: skip


def test_well_formed_bytes_pass() -> None:
    check_wire_format(b"")
    check_wire_format(WELL_FORMED)


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\x00\x00", "field number 0"),
        (b"\x0f", "wire type 7"),
        (b"\x0e", "wire type 6"),
        (b"\x0b", "unterminated group"),
        (b"\x0c", "end of group 1 that is not open"),
        (b"\x0b\x14", "end of group 2 that is not open"),
        (b"\x08" + b"\xff" * 11, "varint too long"),
        (b"\x08\xff", "truncated varint"),
        (b"\x0a\x05abc", "field past the end"),
        (b"\x09\x00", "field past the end"),
        (b"\xf8\xff\xff\xff\x7f\x00", "field number"),
    ],
)
def test_malformed_bytes_are_refused(data: bytes, what: str) -> None:
    with pytest.raises(DecodeError, match=what):
        check_wire_format(data)


def test_a_request_without_fields_is_checked_before_it_is_parsed() -> None:
    request = instance_pb2.DescribeRegionsRequest
    assert decode(b"", request) == request()
    # An unknown field (a newer client's) is kept, as protobuf keeps it.
    assert decode(b"\x08\x01", request).SerializeToString() == b"\x08\x01"
    expected = re.escape("not a valid cloudassist.v1.DescribeRegionsRequest")
    with pytest.raises(InvalidArgument, match=expected):
        decode(b"\x00\x00", request)
