from __future__ import annotations

import pytest

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.parameters import (
    BuiltinValues,
    check_parameter_values,
    fill_parameters,
    parse_parameter_names,
)

BUILTINS = BuiltinValues(
    instance_id="i-1", region_id="cn-hangzhou", invoke_id="t-1", command_id="c-1"
)


def test_names_in_order_of_first_use_without_duplicates() -> None:
    content = b"echo {{b}} {{a}} {{ b }} {{ACS::InstanceId}}"
    assert parse_parameter_names(content, 20) == ["b", "a"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"echo {{a b}}", reasons.PARAMETER_INVALID_NAME),
        (b"echo {{caf\xc3\xa9}}", reasons.PARAMETER_INVALID_NAME),
        (b"echo {{a.b}}", reasons.PARAMETER_INVALID_NAME),
        (b"echo {{}}", reasons.PARAMETER_EMPTY_KEY),
        (b"echo {{  }}", reasons.PARAMETER_EMPTY_KEY),
        (b"echo {{ACS::Nope}}", reasons.PARAMETER_INVALID_NAME),
        (b"echo {{" + b"x" * 65 + b"}}", reasons.CMD_PARAM_NAME_EXCEED_LIMIT),
    ],
)
def test_malformed_names_are_rejected(content: bytes, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_parameter_names(content, 20)
    assert caught.value.reason == reason
    assert caught.value.field == "command_content"


def test_name_of_64_characters_is_accepted() -> None:
    name = "x" * 64
    assert parse_parameter_names(f"{{{{{name}}}}}".encode(), 20) == [name]


def test_too_many_names() -> None:
    content = " ".join(f"{{{{p{i}}}}}" for i in range(21)).encode()
    assert len(parse_parameter_names(content, 21)) == 21
    with pytest.raises(InvalidArgument) as caught:
        parse_parameter_names(content, 20)
    assert caught.value.reason == reasons.CMD_PARAM_COUNT_EXCEED_LIMIT


def test_values_must_match_names() -> None:
    check_parameter_values(["a"], {"a": "1"}, enable_parameter=True, max_count=20)
    with pytest.raises(InvalidArgument) as missing:
        check_parameter_values(["a", "b"], {"a": "1"}, enable_parameter=True, max_count=20)
    assert missing.value.reason == reasons.PARAMETER_MISSING_VALUE
    assert "'b'" in missing.value.message
    with pytest.raises(InvalidArgument) as unknown:
        check_parameter_values(["a"], {"a": "1", "z": "2"}, enable_parameter=True, max_count=20)
    assert unknown.value.reason == reasons.PARAMETER_NOT_MATCHED
    assert "'z'" in unknown.value.message


def test_values_when_parameters_are_disabled() -> None:
    check_parameter_values([], {}, enable_parameter=False, max_count=20)
    with pytest.raises(InvalidArgument) as caught:
        check_parameter_values([], {"a": "1"}, enable_parameter=False, max_count=20)
    assert caught.value.reason == reasons.PARAMETERS_DISABLED


def test_too_many_values() -> None:
    values = {f"p{i}": "v" for i in range(4)}
    with pytest.raises(InvalidArgument) as caught:
        check_parameter_values(list(values), values, enable_parameter=True, max_count=3)
    assert caught.value.reason == reasons.PARAMETER_COUNT_EXCEED_LIMIT


def test_fill_replaces_custom_and_builtin_parameters() -> None:
    content = (
        b"echo {{name}} {{ ACS::InstanceId }} {{ACS::RegionId}} {{ACS::InvokeId}} "
        b"{{ACS::CommandId}}"
    )
    filled = fill_parameters(content, {"name": "w\xf6rld"}, BUILTINS, enable_parameter=True)
    assert filled == "echo wörld i-1 cn-hangzhou t-1 c-1".encode()


def test_fill_leaves_content_alone_when_parameters_are_disabled() -> None:
    content = b"echo {{name}} {{ACS::InstanceId}}"
    assert fill_parameters(content, {}, BUILTINS, enable_parameter=False) == content


def test_fill_keeps_binary_content() -> None:
    content = b"\xff\x00{{a}}\xfe"
    assert fill_parameters(content, {"a": "x"}, BUILTINS, enable_parameter=True) == b"\xff\x00x\xfe"
