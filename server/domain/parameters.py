"""Custom parameters (`{{name}}`) and built-in parameters (`{{ACS::InstanceId}}`) in scripts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument

# `{{ name }}`: whitespace around the name is allowed, braces inside it are not.
_PLACEHOLDER = re.compile(rb"\{\{\s*([^{}]*?)\s*\}\}")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_-]+")
NAME_RULE = "1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
BUILTIN_PREFIX = "ACS::"
BUILTIN_NAMES = ("ACS::InstanceId", "ACS::RegionId", "ACS::InvokeId", "ACS::CommandId")


@dataclass(frozen=True)
class BuiltinValues:
    """The values of the built-in parameters for one instance of one invocation."""

    instance_id: str
    region_id: str
    invoke_id: str
    command_id: str

    def as_mapping(self) -> dict[str, str]:
        return {
            "ACS::InstanceId": self.instance_id,
            "ACS::RegionId": self.region_id,
            "ACS::InvokeId": self.invoke_id,
            "ACS::CommandId": self.command_id,
        }


def parse_parameter_names(content: bytes, max_count: int) -> list[str]:
    """The custom parameter names used in `content`, in order of first use.

    Raises InvalidArgument for a malformed name, an unknown built-in, or too many names.
    """
    names: list[str] = []
    for match in _PLACEHOLDER.finditer(content):
        name = match.group(1).decode("utf-8", errors="replace")
        if not name:
            raise InvalidArgument(
                reasons.PARAMETER_EMPTY_KEY,
                "command_content: '{{}}' has no parameter name; a name is " + NAME_RULE,
                field="command_content",
            )
        if name.startswith(BUILTIN_PREFIX):
            if name not in BUILTIN_NAMES:
                raise InvalidArgument(
                    reasons.PARAMETER_INVALID_NAME,
                    f"command_content: unknown built-in parameter {{{{{name}}}}}; "
                    f"known: {', '.join(BUILTIN_NAMES)}",
                    field="command_content",
                    metadata={"parameter": name},
                )
            continue
        if len(name) > 64 and _NAME_CHARS.fullmatch(name):
            raise InvalidArgument(
                reasons.CMD_PARAM_NAME_EXCEED_LIMIT,
                f"command_content: parameter name {name[:20]!r}... is {len(name)} characters, "
                "the limit is 64",
                field="command_content",
                metadata={"parameter": name},
            )
        if not _NAME.fullmatch(name):
            raise InvalidArgument(
                reasons.PARAMETER_INVALID_NAME,
                f"command_content: parameter name {name!r} is invalid: a name is {NAME_RULE}",
                field="command_content",
                metadata={"parameter": name},
            )
        if name not in names:
            names.append(name)
    if len(names) > max_count:
        raise InvalidArgument(
            reasons.CMD_PARAM_COUNT_EXCEED_LIMIT,
            f"command_content: {len(names)} custom parameters, the limit is {max_count}",
            field="command_content",
            metadata={"count": str(len(names)), "limit": str(max_count)},
        )
    return names


def check_parameter_values(
    names: tuple[str, ...] | list[str],
    values: Mapping[str, str],
    *,
    enable_parameter: bool,
    max_count: int,
) -> None:
    """Every name has a value and every value has a name; no values when parameters are off."""
    if len(values) > max_count:
        raise InvalidArgument(
            reasons.PARAMETER_COUNT_EXCEED_LIMIT,
            f"parameters: {len(values)} values given, the limit is {max_count}",
            field="parameters",
            metadata={"count": str(len(values)), "limit": str(max_count)},
        )
    if not enable_parameter:
        if values:
            first = sorted(values)[0]
            raise InvalidArgument(
                reasons.PARAMETERS_DISABLED,
                f"parameters: the command does not enable parameters, but {first!r} was given",
                field="parameters",
                metadata={"parameter": first},
            )
        return
    for name in names:
        if name not in values:
            raise InvalidArgument(
                reasons.PARAMETER_MISSING_VALUE,
                f"parameters: no value for parameter {name!r}",
                field="parameters",
                metadata={"parameter": name},
            )
    for key in sorted(values):
        if key not in names:
            raise InvalidArgument(
                reasons.PARAMETER_NOT_MATCHED,
                f"parameters: {key!r} is not a parameter of the command "
                f"(its parameters: {', '.join(names) or 'none'})",
                field="parameters",
                metadata={"parameter": key},
            )


def parameters_size(values: Mapping[str, str]) -> int:
    """Bytes the parameter names and values take, counted against the content limit."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in values.items())


def fill_parameters(
    content: bytes,
    values: Mapping[str, str],
    builtins: BuiltinValues,
    *,
    enable_parameter: bool,
) -> bytes:
    """The script with every placeholder replaced; unchanged when parameters are off."""
    if not enable_parameter:
        return content
    known = {**builtins.as_mapping(), **values}

    def replace(match: re.Match[bytes]) -> bytes:
        name = match.group(1).decode("utf-8", errors="replace")
        return known[name].encode() if name in known else match.group(0)

    return _PLACEHOLDER.sub(replace, content)
