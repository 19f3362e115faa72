"""Shape and size rules of server/domain/validation.py and fields.py, one rule at a time."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.fields import (
    base64_size,
    check_client_token,
    check_region,
    check_timeout,
)
from cloudassist.server.domain.limits import Limits
from cloudassist.server.domain.model import (
    CommandDraft,
    CommandPatch,
    CommandSpec,
    CommandType,
    InvocationDraft,
    InvocationSpec,
    RepeatMode,
)
from cloudassist.server.domain.validation import (
    apply_patch,
    validate_command,
    validate_invocation,
)

LIMITS = Limits()
REGION = "cn-hangzhou"


def draft(**changes: Any) -> CommandDraft:
    base = CommandDraft(
        region_id=REGION,
        name="hello",
        type=CommandType.RUN_SHELL_SCRIPT,
        content=b"echo hello",
    )
    return replace(base, **changes)


def command(**changes: Any) -> CommandSpec:
    return validate_command(draft(**changes), LIMITS)


def invocation(**changes: Any) -> InvocationDraft:
    base = InvocationDraft(region_id=REGION, command_id="c-1", instance_ids=("i-1",))
    return replace(base, **changes)


def no_frequency_check(frequency: str, timeout: int) -> None:
    raise AssertionError(f"check_frequency called for {frequency!r} ({timeout} s)")


def invoke(
    inv: InvocationDraft,
    spec: CommandSpec | None = None,
    limits: Limits = LIMITS,
    check_frequency: Callable[[str, int], None] = no_frequency_check,
) -> InvocationSpec:
    return validate_invocation(
        inv, "c-1", command() if spec is None else spec, limits, check_frequency
    )


def assert_invalid(caught: pytest.ExceptionInfo[InvalidArgument], reason: str, field: str) -> None:
    assert type(caught.value) is InvalidArgument
    assert caught.value.reason == reason
    assert caught.value.field == field


# --- base64_size, check_region, check_client_token, check_timeout ---


@pytest.mark.parametrize("raw_size", [0, 1, 2, 3, 4, 5, 6, 100, 12_288, 12_289])
def test_base64_size_is_the_length_of_the_encoding(raw_size: int) -> None:
    assert base64_size(raw_size) == len(base64.b64encode(b"x" * raw_size))


def test_missing_region_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_region("")
    assert_invalid(caught, reasons.MISSING_REGION_ID, "region_id")


@pytest.mark.parametrize(
    "region", ["CN-Hangzhou", "-hangzhou", "cn_hangzhou", "cn hangzhou", "a" * 64]
)
def test_malformed_region_is_rejected(region: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_region(region)
    assert_invalid(caught, reasons.INVALID_REGION_ID, "region_id")


@pytest.mark.parametrize("region", ["cn-hangzhou", "us-east-1", "a", "a" * 63])
def test_wellformed_region_is_returned(region: str) -> None:
    assert check_region(region) == region


def test_command_without_region_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_command(draft(region_id=""), LIMITS)
    assert_invalid(caught, reasons.MISSING_REGION_ID, "region_id")


def test_command_with_invalid_region_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_command(draft(region_id="Hangzhou"), LIMITS)
    assert_invalid(caught, reasons.INVALID_REGION_ID, "region_id")


@pytest.mark.parametrize("token", ["", "abc", "x" * 64, "a-b_c.d:e!~"])
def test_valid_client_tokens_are_returned(token: str) -> None:
    assert check_client_token(token) == token


@pytest.mark.parametrize("token", ["has space", "x" * 65, "tab\there", "caf\u00e9"])
def test_malformed_client_token_is_rejected(token: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_client_token(token)
    assert_invalid(caught, reasons.INVALID_CLIENT_TOKEN, "client_token")


def test_timeout_zero_means_the_default() -> None:
    assert check_timeout(0, LIMITS) == LIMITS.default_timeout_seconds
    assert check_timeout(0, Limits(default_timeout_seconds=42)) == 42


@pytest.mark.parametrize("seconds", [LIMITS.min_timeout_seconds, 300, LIMITS.max_timeout_seconds])
def test_timeout_within_bounds_is_kept(seconds: int) -> None:
    assert check_timeout(seconds, LIMITS) == seconds


@pytest.mark.parametrize(
    "seconds", [-1, LIMITS.min_timeout_seconds - 1, LIMITS.max_timeout_seconds + 1]
)
def test_timeout_outside_bounds_is_rejected(seconds: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_timeout(seconds, LIMITS)
    assert_invalid(caught, reasons.INVALID_TIMEOUT, "timeout_seconds")


# --- validate_command ---


def test_valid_command_becomes_a_spec_with_defaults() -> None:
    spec = command()
    assert spec == CommandSpec(
        region_id=REGION,
        name="hello",
        type=CommandType.RUN_SHELL_SCRIPT,
        content=b"echo hello",
        description="",
        working_dir="",
        timeout_seconds=LIMITS.default_timeout_seconds,
        enable_parameter=False,
        parameter_names=(),
    )


def test_missing_name_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(name="")
    assert_invalid(caught, reasons.MISSING_NAME, "name")


def test_name_at_the_limit_is_accepted() -> None:
    name = "n" * LIMITS.name_chars
    assert command(name=name).name == name


def test_name_over_the_limit_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(name="n" * (LIMITS.name_chars + 1))
    assert_invalid(caught, reasons.CMD_NAME_EXCEED_LIMIT, "name")


def test_name_limit_comes_from_limits() -> None:
    limits = Limits(name_chars=5)
    assert validate_command(draft(name="abcde"), limits).name == "abcde"
    with pytest.raises(InvalidArgument) as caught:
        validate_command(draft(name="abcdef"), limits)
    assert_invalid(caught, reasons.CMD_NAME_EXCEED_LIMIT, "name")


@pytest.mark.parametrize("name", ["a\x01b", "tab\tname", "new\nline", "del\x7f"])
def test_name_with_control_characters_is_rejected(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(name=name)
    assert_invalid(caught, reasons.CMD_NAME_INVALID_CHARACTER, "name")


def test_description_at_the_limit_is_accepted() -> None:
    description = "d" * LIMITS.description_chars
    assert command(description=description).description == description


def test_description_over_the_limit_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(description="d" * (LIMITS.description_chars + 1))
    assert_invalid(caught, reasons.CMD_DESC_EXCEED_LIMIT, "description")


def test_description_may_hold_newlines_and_tabs_but_no_other_control_characters() -> None:
    assert command(description="line one\n\tline two").description == "line one\n\tline two"
    with pytest.raises(InvalidArgument) as caught:
        command(description="bell\x07")
    assert_invalid(caught, reasons.CMD_DESC_INVALID_CHARACTER, "description")


def test_missing_type_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(type=None)
    assert_invalid(caught, reasons.MISSING_COMMAND_TYPE, "type")


def test_missing_content_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(content=b"")
    assert_invalid(caught, reasons.MISSING_COMMAND_CONTENT, "command_content")


def test_content_whose_base64_size_equals_the_limit_is_accepted() -> None:
    raw = b"x" * (LIMITS.content_bytes // 4 * 3)
    assert len(base64.b64encode(raw)) == LIMITS.content_bytes
    assert command(content=raw).content == raw


def test_content_one_byte_over_the_base64_limit_is_rejected() -> None:
    raw = b"x" * (LIMITS.content_bytes // 4 * 3 + 1)
    assert len(base64.b64encode(raw)) > LIMITS.content_bytes
    with pytest.raises(InvalidArgument) as caught:
        command(content=raw)
    assert_invalid(caught, reasons.CMD_CONTENT_EXCEED_LIMIT, "command_content")
    assert caught.value.metadata == {
        "size": str(len(base64.b64encode(raw))),
        "limit": str(LIMITS.content_bytes),
    }


def test_timeout_zero_in_a_command_becomes_the_default() -> None:
    assert command(timeout_seconds=0).timeout_seconds == LIMITS.default_timeout_seconds


def test_command_timeout_is_kept() -> None:
    assert command(timeout_seconds=3600).timeout_seconds == 3600


@pytest.mark.parametrize(
    "seconds", [LIMITS.min_timeout_seconds - 1, LIMITS.max_timeout_seconds + 1]
)
def test_command_timeout_out_of_range_is_rejected(seconds: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(timeout_seconds=seconds)
    assert_invalid(caught, reasons.INVALID_TIMEOUT, "timeout_seconds")


def test_working_dir_at_the_limit_is_accepted() -> None:
    working_dir = "/" + "w" * (LIMITS.working_dir_chars - 1)
    assert command(working_dir=working_dir).working_dir == working_dir


def test_working_dir_over_the_limit_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(working_dir="/" + "w" * LIMITS.working_dir_chars)
    assert_invalid(caught, reasons.INVALID_WORKING_DIR, "working_dir")


def test_working_dir_with_control_characters_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        command(working_dir="/tmp/\n")
    assert_invalid(caught, reasons.INVALID_WORKING_DIR, "working_dir")


def test_parameter_names_are_parsed_when_parameters_are_enabled() -> None:
    spec = command(content=b"echo {{b}} {{a}} {{ACS::InstanceId}} {{b}}", enable_parameter=True)
    assert spec.enable_parameter is True
    assert spec.parameter_names == ("b", "a")


def test_parameter_names_are_not_parsed_when_parameters_are_disabled() -> None:
    spec = command(content=b"echo {{b}} {{a}}", enable_parameter=False)
    assert spec.parameter_names == ()


def test_malformed_placeholder_is_only_an_error_when_parameters_are_enabled() -> None:
    content = b"echo {{not a name}}"
    assert command(content=content, enable_parameter=False).content == content
    with pytest.raises(InvalidArgument) as caught:
        command(content=content, enable_parameter=True)
    assert_invalid(caught, reasons.PARAMETER_INVALID_NAME, "command_content")


# --- apply_patch ---


def test_patch_changes_only_the_fields_it_sets() -> None:
    spec = command(description="old", working_dir="/old", timeout_seconds=120)
    patched = apply_patch(spec, CommandPatch(name="renamed"), LIMITS)
    assert patched == replace(spec, name="renamed")


def test_patch_of_every_field() -> None:
    spec = command()
    patched = apply_patch(
        spec,
        CommandPatch(
            name="n2",
            description="d2",
            working_dir="/w2",
            timeout_seconds=300,
            content=b"echo two",
        ),
        LIMITS,
    )
    assert patched == replace(
        spec,
        name="n2",
        description="d2",
        working_dir="/w2",
        timeout_seconds=300,
        content=b"echo two",
    )


def test_patch_with_a_name_over_the_limit_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        apply_patch(command(), CommandPatch(name="n" * (LIMITS.name_chars + 1)), LIMITS)
    assert_invalid(caught, reasons.CMD_NAME_EXCEED_LIMIT, "name")


def test_patch_with_empty_content_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        apply_patch(command(), CommandPatch(content=b""), LIMITS)
    assert_invalid(caught, reasons.MISSING_COMMAND_CONTENT, "command_content")


def test_patch_with_a_timeout_out_of_range_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        apply_patch(command(), CommandPatch(timeout_seconds=LIMITS.max_timeout_seconds + 1), LIMITS)
    assert_invalid(caught, reasons.INVALID_TIMEOUT, "timeout_seconds")


def test_patch_of_content_reparses_parameter_names() -> None:
    spec = command(content=b"echo {{a}}", enable_parameter=True)
    patched = apply_patch(spec, CommandPatch(content=b"echo {{x}} {{y}}"), LIMITS)
    assert patched.parameter_names == ("x", "y")


def test_patch_is_checked_against_the_limits_given() -> None:
    spec = command(name="abcdef")
    with pytest.raises(InvalidArgument) as caught:
        apply_patch(spec, CommandPatch(description="ok"), Limits(name_chars=5))
    assert_invalid(caught, reasons.CMD_NAME_EXCEED_LIMIT, "name")


# --- validate_invocation ---


def test_valid_invocation_copies_the_command() -> None:
    spec = command(name="cmd", working_dir="/srv", timeout_seconds=120)
    result = invoke(invocation(instance_ids=("i-1", "i-2")), spec)
    assert result.region_id == REGION
    assert result.command_id == "c-1"
    assert result.command_name == "cmd"
    assert result.command_type is CommandType.RUN_SHELL_SCRIPT
    assert result.content == b"echo hello"
    assert result.instance_ids == ("i-1", "i-2")
    assert result.repeat_mode is RepeatMode.ONCE
    assert result.frequency == ""
    assert result.timeout_seconds == 120
    assert result.working_dir == "/srv"
    assert result.username == ""
    assert result.parameters == {}


def test_invocation_without_instances_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(instance_ids=()))
    assert_invalid(caught, reasons.MISSING_INSTANCE_IDS, "instance_ids")


def test_invocation_at_the_instance_limit_is_accepted() -> None:
    limits = Limits(instances_per_invocation=2)
    assert invoke(invocation(instance_ids=("i-1", "i-2")), limits=limits).instance_ids == (
        "i-1",
        "i-2",
    )


def test_invocation_over_the_instance_limit_is_rejected() -> None:
    limits = Limits(instances_per_invocation=2)
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(instance_ids=("i-1", "i-2", "i-3")), limits=limits)
    assert_invalid(caught, reasons.INSTANCE_IDS_EXCEED_LIMIT, "instance_ids")
    assert caught.value.metadata == {"count": "3", "limit": "2"}


def test_duplicate_instance_ids_are_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(instance_ids=("i-1", "i-2", "i-1")))
    assert_invalid(caught, reasons.INVALID_INSTANCE_IDS, "instance_ids")
    assert caught.value.metadata == {"instance_id": "i-1"}


@pytest.mark.parametrize(
    "instance_id", ["", "i 1", "i/1", "-i1", ".i1", "i\n1", "i" * (LIMITS.instance_id_chars + 1)]
)
def test_malformed_instance_id_is_rejected(instance_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(instance_ids=("i-ok", instance_id)))
    assert_invalid(caught, reasons.INVALID_INSTANCE_IDS, "instance_ids")


@pytest.mark.parametrize(
    "instance_id", ["i-1", "host.example.com", "i_1:a", "I" * LIMITS.instance_id_chars]
)
def test_wellformed_instance_ids_are_accepted(instance_id: str) -> None:
    assert invoke(invocation(instance_ids=(instance_id,))).instance_ids == (instance_id,)


def test_timed_with_repeat_mode_once_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(timed=True, repeat_mode=RepeatMode.ONCE))
    assert_invalid(caught, reasons.INVALID_REPEAT_MODE, "timed")


def test_frequency_for_a_one_shot_invocation_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(repeat_mode=RepeatMode.ONCE, frequency="0 */5 * * * *"))
    assert_invalid(caught, reasons.INVALID_FREQUENCY, "frequency")


def test_frequency_without_repeat_mode_or_timed_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(frequency="0 */5 * * * *"))
    assert_invalid(caught, reasons.INVALID_FREQUENCY, "frequency")


def test_periodic_invocation_without_frequency_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(repeat_mode=RepeatMode.PERIOD))
    assert_invalid(caught, reasons.MISSING_FREQUENCY, "frequency")


def test_timed_without_frequency_is_a_period_missing_its_frequency() -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(timed=True))
    assert_invalid(caught, reasons.MISSING_FREQUENCY, "frequency")


def test_periodic_invocation_calls_check_frequency_with_frequency_and_timeout() -> None:
    calls: list[tuple[str, int]] = []
    result = invoke(
        invocation(repeat_mode=RepeatMode.PERIOD, frequency="0 */5 * * * *", timeout_seconds=90),
        check_frequency=lambda frequency, timeout: calls.append((frequency, timeout)),
    )
    assert calls == [("0 */5 * * * *", 90)]
    assert result.repeat_mode is RepeatMode.PERIOD
    assert result.frequency == "0 */5 * * * *"


def test_timed_flag_without_repeat_mode_means_period() -> None:
    calls: list[tuple[str, int]] = []
    result = invoke(
        invocation(timed=True, frequency="rate(5m)"),
        command(timeout_seconds=30),
        check_frequency=lambda frequency, timeout: calls.append((frequency, timeout)),
    )
    assert calls == [("rate(5m)", 30)]
    assert result.repeat_mode is RepeatMode.PERIOD


def test_error_from_check_frequency_propagates() -> None:
    def reject(frequency: str, timeout: int) -> None:
        raise InvalidArgument(reasons.INVALID_FREQUENCY, "nope", field="frequency")

    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(repeat_mode=RepeatMode.PERIOD, frequency="bad"), check_frequency=reject)
    assert_invalid(caught, reasons.INVALID_FREQUENCY, "frequency")


def test_missing_parameter_value_is_rejected() -> None:
    spec = command(content=b"echo {{a}} {{b}}", enable_parameter=True)
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(parameters={"a": "1"}), spec)
    assert_invalid(caught, reasons.PARAMETER_MISSING_VALUE, "parameters")
    assert caught.value.metadata == {"parameter": "b"}


def test_unknown_parameter_key_is_rejected() -> None:
    spec = command(content=b"echo {{a}}", enable_parameter=True)
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(parameters={"a": "1", "zzz": "2"}), spec)
    assert_invalid(caught, reasons.PARAMETER_NOT_MATCHED, "parameters")
    assert caught.value.metadata == {"parameter": "zzz"}


def test_parameters_for_a_command_without_parameters_are_rejected() -> None:
    spec = command(content=b"echo {{a}}", enable_parameter=False)
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(parameters={"a": "1"}), spec)
    assert_invalid(caught, reasons.PARAMETERS_DISABLED, "parameters")


def test_parameter_values_are_kept_in_the_spec() -> None:
    spec = command(content=b"echo {{a}} {{b}}", enable_parameter=True)
    result = invoke(invocation(parameters={"a": "1", "b": "two"}), spec)
    assert result.parameters == {"a": "1", "b": "two"}
    assert result.enable_parameter is True


def _content_with_parameter(base64_budget: int) -> bytes:
    """A script using {{a}} whose Base64 size is exactly `base64_budget` (a multiple of 4)."""
    raw = b"{{a}}"
    return raw + b"x" * (base64_budget // 4 * 3 - len(raw))


def test_content_plus_parameters_at_the_limit_is_accepted() -> None:
    # 4 bytes of Base64 are left for the parameters: "a" + "bcd".
    content = _content_with_parameter(LIMITS.content_bytes - 4)
    spec = command(content=content, enable_parameter=True)
    assert invoke(invocation(parameters={"a": "bcd"}), spec).parameters == {"a": "bcd"}


def test_content_plus_parameters_over_the_limit_is_rejected() -> None:
    content = _content_with_parameter(LIMITS.content_bytes - 4)
    spec = command(content=content, enable_parameter=True)
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(parameters={"a": "bcde"}), spec)
    assert_invalid(caught, reasons.CMD_CONTENT_EXCEED_LIMIT, "command_content")
    assert caught.value.metadata == {
        "size": str(LIMITS.content_bytes + 1),
        "limit": str(LIMITS.content_bytes),
    }


def test_parameter_sizes_count_utf8_bytes() -> None:
    content = _content_with_parameter(LIMITS.content_bytes - 4)
    spec = command(content=content, enable_parameter=True)
    # "a" plus "\u00e9\u00e9" is 1 + 4 bytes: one over the 4 bytes left.
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(parameters={"a": "\u00e9\u00e9"}), spec)
    assert_invalid(caught, reasons.CMD_CONTENT_EXCEED_LIMIT, "command_content")


def test_invocation_timeout_overrides_the_command() -> None:
    spec = command(timeout_seconds=120)
    assert invoke(invocation(timeout_seconds=600), spec).timeout_seconds == 600


def test_invocation_timeout_none_keeps_the_command_timeout() -> None:
    spec = command(timeout_seconds=120)
    assert invoke(invocation(timeout_seconds=None), spec).timeout_seconds == 120


def test_invocation_timeout_zero_means_the_default() -> None:
    spec = command(timeout_seconds=120)
    assert invoke(invocation(timeout_seconds=0), spec).timeout_seconds == (
        LIMITS.default_timeout_seconds
    )


def test_invocation_timeout_out_of_range_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(timeout_seconds=LIMITS.min_timeout_seconds - 1))
    assert_invalid(caught, reasons.INVALID_TIMEOUT, "timeout_seconds")


def test_invocation_working_dir_overrides_the_command() -> None:
    spec = command(working_dir="/srv")
    assert invoke(invocation(working_dir="/tmp"), spec).working_dir == "/tmp"
    assert invoke(invocation(working_dir=""), spec).working_dir == ""
    assert invoke(invocation(working_dir=None), spec).working_dir == "/srv"


def test_invocation_working_dir_over_the_limit_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(working_dir="/" + "w" * LIMITS.working_dir_chars))
    assert_invalid(caught, reasons.INVALID_WORKING_DIR, "working_dir")


def test_username_at_the_limit_is_accepted() -> None:
    username = "u" * LIMITS.username_chars
    assert invoke(invocation(username=username)).username == username


def test_username_over_the_limit_is_rejected() -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(username="u" * (LIMITS.username_chars + 1)))
    assert_invalid(caught, reasons.USERNAME_EXCEED_LIMIT, "username")


@pytest.mark.parametrize("username", ["root/x", "/", "a\x00b"])
def test_username_with_slash_or_control_characters_is_rejected(username: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        invoke(invocation(username=username))
    assert_invalid(caught, reasons.INVALID_USERNAME, "username")
