"""Limits and quotas; the defaults are the original product's (see the seed documents)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Every limit a request is checked against; each is a server flag."""

    commands_per_region: int = 100
    invocations_per_region_per_day: int = 5000
    instances_per_invocation: int = 50
    # Base64 of the script plus the custom parameter names and values.
    content_bytes: int = 16 * 1024
    parameters_per_command: int = 20
    default_timeout_seconds: int = 60
    min_timeout_seconds: int = 10
    max_timeout_seconds: int = 86_400
    # Output stored per record; the rest is counted in `dropped`.
    output_bytes_per_record: int = 10 * MIB
    name_chars: int = 128
    description_chars: int = 512
    working_dir_chars: int = 4096
    username_chars: int = 256
    instance_id_chars: int = 128
    # Environment variables per invocation, and their names and values in bytes.
    env_vars: int = 32
    env_bytes: int = 16 * 1024
    # Agent hellos admitted a second at most, and stored at once (domain/admission.py): an
    # agent beyond what the server stores is told when to come back, so that a restarted fleet
    # does not storm it.
    agent_connects_per_second: int = 1000
    agent_connects_in_flight: int = 32

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise ValueError(f"limit {name} must be at least 1, not {value}")
        if not self.min_timeout_seconds <= self.default_timeout_seconds <= self.max_timeout_seconds:
            raise ValueError(
                "limits: default_timeout_seconds must lie between min_timeout_seconds and "
                "max_timeout_seconds"
            )
