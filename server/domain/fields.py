"""Checks of single request fields that every service shares: region, instance ids, client
tokens, required ids, name filters and timeouts (the seed's limits)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument, NotFound
from cloudassist.server.domain.limits import Limits

_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_CLIENT_TOKEN = re.compile(r"[\x21-\x7e]{1,64}")
# Instance ids are chosen by operators: printable ASCII without spaces or slashes.
_INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def base64_size(raw_size: int) -> int:
    """Length of the Base64 encoding of `raw_size` bytes."""
    return 4 * ((raw_size + 2) // 3)


def has_control_chars(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def check_region(region_id: str) -> str:
    if not region_id:
        raise InvalidArgument(reasons.MISSING_REGION_ID, "region_id: required", field="region_id")
    if not _REGION.fullmatch(region_id):
        raise InvalidArgument(
            reasons.INVALID_REGION_ID,
            "region_id: 1 to 63 characters from a-z, 0-9 and '-', starting with a letter or "
            "digit (like cn-hangzhou)",
            field="region_id",
        )
    return region_id


def check_required(value: str, field: str, reason: str) -> str:
    if not value:
        raise InvalidArgument(reason, f"{field}: required", field=field)
    return value


def check_instances_found(wanted: Sequence[str], found: Collection[str], region_id: str) -> None:
    """NotFound naming every wanted instance the region (and account) does not have."""
    missing = [i for i in wanted if i not in found]
    if missing:
        raise NotFound(
            reasons.INSTANCE_NOT_FOUND,
            f"instance_ids: no instance {', '.join(missing)} in region {region_id}",
            field="instance_ids",
            metadata={"instance_ids": ",".join(missing)},
        )


def check_instance_id(instance_id: str, limits: Limits, field: str = "instance_ids") -> str:
    if len(instance_id) > limits.instance_id_chars or not _INSTANCE_ID.fullmatch(instance_id):
        raise InvalidArgument(
            reasons.INVALID_INSTANCE_IDS,
            f"{field}: {instance_id[:80]!r} is not an instance id (1 to "
            f"{limits.instance_id_chars} characters from A-Z, a-z, 0-9, '.', '_', ':', '-')",
            field=field,
            metadata={"instance_id": instance_id[:128]},
        )
    return instance_id


def check_client_token(token: str) -> str:
    if token and not _CLIENT_TOKEN.fullmatch(token):
        raise InvalidArgument(
            reasons.INVALID_CLIENT_TOKEN,
            "client_token: 1 to 64 printable ASCII characters without spaces",
            field="client_token",
        )
    return token


def check_name_filter(text: str, field: str, limits: Limits) -> str:
    """A search text for command names: no longer than a command name may be."""
    if len(text) > limits.name_chars:
        raise InvalidArgument(
            reasons.INVALID_FILTER,
            f"{field}: {len(text)} characters; a command name, and so the text searched for in "
            f"one, is at most {limits.name_chars}",
            field=field,
        )
    return text


def check_timeout(timeout_seconds: int, limits: Limits) -> int:
    """0 means the default; anything else must lie within the configured range."""
    if timeout_seconds == 0:
        return limits.default_timeout_seconds
    if not limits.min_timeout_seconds <= timeout_seconds <= limits.max_timeout_seconds:
        raise InvalidArgument(
            reasons.INVALID_TIMEOUT,
            f"timeout_seconds: must be between {limits.min_timeout_seconds} and "
            f"{limits.max_timeout_seconds} (0 means {limits.default_timeout_seconds}), "
            f"not {timeout_seconds}",
            field="timeout_seconds",
        )
    return timeout_seconds
