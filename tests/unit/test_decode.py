"""Parsing requests by hand: what does not parse, and NUL characters, are INVALID_ARGUMENT."""

from __future__ import annotations

import pytest

from cloudassist.server.api.registration import decode
from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.v1 import agent_pb2, command_pb2


def test_a_clean_message_parses() -> None:
    sent = agent_pb2.ConnectRequest(
        output=agent_pb2.TaskOutput(task_id="r-1", offset=7, data=b"\x00\xff binary is fine")
    )
    assert decode(sent.SerializeToString(), agent_pb2.ConnectRequest) == sent


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (command_pb2.InvokeCommandRequest(region_id="cn\x00"), "region_id"),
        (command_pb2.InvokeCommandRequest(instance_ids=["i-1", "i-\x00"]), "instance_ids"),
        (command_pb2.InvokeCommandRequest(parameters={"k": "v\x00"}), "parameters"),
        (
            agent_pb2.ConnectRequest(hello=agent_pb2.Hello(hostname="a\x00b")),
            "hello.hostname",
        ),
    ],
)
def test_a_nul_character_in_any_string_is_named(request_: object, field: str) -> None:
    raw = request_.SerializeToString()  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument) as caught:
        decode(raw, type(request_))  # type: ignore[arg-type]
    assert caught.value.reason == reasons.INVALID_CHARACTER
    assert caught.value.field == field


def test_bytes_that_do_not_parse_are_malformed() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode(b"\x12\xff\xff\xff", agent_pb2.ConnectRequest)
    assert caught.value.reason == reasons.MALFORMED_REQUEST
