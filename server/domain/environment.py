"""Environment variables an invocation passes to its scripts."""

from __future__ import annotations

import re
from collections.abc import Mapping

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.limits import Limits

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The agent sets these itself (CLOUDASSIST_TASK_ID, CLOUDASSIST_INVOKE_ID, ...).
RESERVED_PREFIX = "CLOUDASSIST_"


def check_env(env: Mapping[str, str], limits: Limits) -> dict[str, str]:
    """The variables, or InvalidArgument naming the first one that breaks a rule."""
    if len(env) > limits.env_vars:
        raise InvalidArgument(
            reasons.ENV_EXCEED_LIMIT,
            f"env: {len(env)} variables, the limit is {limits.env_vars}",
            field="env",
            metadata={"count": str(len(env)), "limit": str(limits.env_vars)},
        )
    size = 0
    for name in sorted(env):
        if not ENV_NAME.fullmatch(name):
            raise InvalidArgument(
                reasons.ENV_INVALID_NAME,
                f"env: {name!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)",
                field="env",
                metadata={"name": name[:128]},
            )
        if name.upper().startswith(RESERVED_PREFIX):
            raise InvalidArgument(
                reasons.ENV_RESERVED_NAME,
                f"env: {name!r} is reserved ({RESERVED_PREFIX}* is set by the agent)",
                field="env",
                metadata={"name": name[:128]},
            )
        size += len(name.encode()) + len(env[name].encode())
    if size > limits.env_bytes:
        raise InvalidArgument(
            reasons.ENV_EXCEED_LIMIT,
            f"env: names and values take {size} bytes, the limit is {limits.env_bytes}",
            field="env",
            metadata={"size": str(size), "limit": str(limits.env_bytes)},
        )
    return dict(env)
