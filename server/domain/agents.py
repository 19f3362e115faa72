"""What an agent says of itself and of the tasks it holds when it connects (its hello)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudassist.server.domain.model import CommandType, OsType


@dataclass(frozen=True)
class AgentIdentity:
    """What an agent says of itself in its hello."""

    instance_id: str
    secret: str
    os_type: OsType
    hostname: str
    agent_version: str
    tags: dict[str, str] = field(default_factory=dict)
    boot_id: str = ""
    extra_command_types: frozenset[CommandType] = frozenset()


@dataclass(frozen=True)
class HeldTask:
    """A task an agent says it holds (in its hello)."""

    record_id: str
    output_size: int
    finished: bool
