"""Flags whose defaults come from the environment: a program with the prefix CLOUDASSIST_AGENT_
reads the default of --max-backoff from CLOUDASSIST_AGENT_MAX_BACKOFF (the flag wins)."""

from __future__ import annotations

import os
from pathlib import Path


def variable(prefix: str, flag: str) -> str:
    """The environment variable of `flag` (its name without the dashes in front)."""
    return prefix + flag.upper().replace("-", "_")


class EnvDefaults:
    """The defaults of one program's flags, read from the environment when asked for."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def get(self, flag: str, default: str) -> str:
        """The flag's variable, or `default` when it is not set."""
        return os.environ.get(variable(self.prefix, flag), default)

    def path(self, flag: str) -> Path | None:
        """The flag's variable as a path; None when it is not set or empty."""
        value = self.get(flag, "")
        return Path(value) if value else None
