"""The domain's value types: what the API layer builds from requests and the store returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from cloudassist.server.domain.files import FileSpec
from cloudassist.server.domain.status import ExecutionState, InvokeStatus, coarse_status


class CommandType(StrEnum):
    RUN_SHELL_SCRIPT = "RUN_SHELL_SCRIPT"
    RUN_BAT_SCRIPT = "RUN_BAT_SCRIPT"
    RUN_POWERSHELL_SCRIPT = "RUN_POWERSHELL_SCRIPT"


class OsType(StrEnum):
    LINUX = "LINUX"
    WINDOWS = "WINDOWS"


class RepeatMode(StrEnum):
    ONCE = "ONCE"
    PERIOD = "PERIOD"
    NEXT_REBOOT_ONLY = "NEXT_REBOOT_ONLY"
    EVERY_REBOOT = "EVERY_REBOOT"

    @property
    def on_reboot(self) -> bool:
        return self in (RepeatMode.NEXT_REBOOT_ONLY, RepeatMode.EVERY_REBOOT)


def runs_on(
    command_type: CommandType, os_type: OsType, extra: frozenset[CommandType] = frozenset()
) -> bool:
    """Shell scripts run on Linux; Bat and PowerShell scripts on Windows (the seed); and what
    the instance's agent says it runs besides (PowerShell through pwsh on Linux)."""
    if command_type in extra:
        return True
    if command_type is CommandType.RUN_SHELL_SCRIPT:
        return os_type is OsType.LINUX
    return os_type is OsType.WINDOWS


@dataclass(frozen=True)
class CommandDraft:
    """A command as a client describes it; `timeout_seconds` 0 means the default."""

    region_id: str
    name: str
    type: CommandType | None
    content: bytes
    description: str = ""
    working_dir: str = ""
    timeout_seconds: int = 0
    enable_parameter: bool = False
    tags: tuple[tuple[str, str], ...] = ()
    launcher: str = ""


@dataclass(frozen=True)
class CommandPatch:
    """The fields of a ModifyCommand that are set."""

    name: str | None = None
    description: str | None = None
    working_dir: str | None = None
    timeout_seconds: int | None = None
    content: bytes | None = None


@dataclass(frozen=True)
class CommandSpec:
    """A validated command, ready to store."""

    region_id: str
    name: str
    type: CommandType
    content: bytes
    description: str
    working_dir: str
    timeout_seconds: int
    enable_parameter: bool
    parameter_names: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)
    launcher: str = ""


@dataclass(frozen=True)
class Command:
    command_id: str
    spec: CommandSpec
    invoke_times: int
    created_ms: int


@dataclass(frozen=True)
class InvocationDraft:
    """An invocation as a client describes it; None means "the command's value"."""

    region_id: str
    command_id: str
    instance_ids: tuple[str, ...]
    parameters: dict[str, str] = field(default_factory=dict)
    repeat_mode: RepeatMode | None = None
    frequency: str = ""
    timed: bool = False
    timeout_seconds: int | None = None
    working_dir: str | None = None
    username: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # Instead of instance_ids: the instances with all of these tags ((key, value) pairs).
    resource_tags: tuple[tuple[str, str], ...] = ()
    # Rate control: a number or a percentage of the targets ("" for none).
    max_concurrency: str = ""
    max_errors: str = ""


@dataclass(frozen=True)
class InvocationSpec:
    """A validated invocation: the command as it was when invoked, and where to run it."""

    region_id: str
    command_id: str
    command_name: str
    command_type: CommandType
    content: bytes
    enable_parameter: bool
    parameters: dict[str, str]
    instance_ids: tuple[str, ...]
    repeat_mode: RepeatMode
    frequency: str
    timeout_seconds: int
    working_dir: str
    username: str
    env: dict[str, str] = field(default_factory=dict)
    launcher: str = ""
    # Rate control, resolved to numbers of targets (None: no limit).
    max_concurrency: int | None = None
    max_errors: int | None = None
    # SendFile: the file to write (its content is `content`); None for a command.
    file: FileSpec | None = None


@dataclass(frozen=True)
class Instance:
    instance_id: str
    region_id: str
    os_type: OsType
    hostname: str
    agent_version: str
    online: bool
    last_heartbeat_ms: int | None
    registered_ms: int
    invocation_count: int
    last_invoked_ms: int | None
    active_task_count: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    extra_command_types: frozenset[CommandType] = frozenset()


@dataclass(frozen=True)
class Record:
    """One execution of an invocation on one instance."""

    record_id: str
    invoke_id: str
    instance_id: str
    command_id: str
    region_id: str
    username: str
    state: ExecutionState
    exit_code: int | None
    output_size: int
    dropped: int
    error_code: str
    error_info: str
    repeats: int
    created_ms: int
    start_ms: int | None
    finish_ms: int | None
    stop_ms: int | None

    @property
    def status(self) -> InvokeStatus:
        return coarse_status(self.state)


@dataclass(frozen=True)
class InvokeInstance:
    """One instance of an invocation, with the state of its latest record."""

    instance_id: str
    state: ExecutionState
    status: InvokeStatus
    repeats: int
    exit_code: int | None
    error_code: str
    error_info: str
    created_ms: int
    start_ms: int | None
    finish_ms: int | None
    stop_ms: int | None
    updated_ms: int


@dataclass(frozen=True)
class Invocation:
    invoke_id: str
    spec: InvocationSpec
    status: InvokeStatus
    created_ms: int
    instances: tuple[InvokeInstance, ...]


@dataclass(frozen=True)
class OutputSlice:
    record_id: str
    data: bytes
    offset: int
    total_size: int
    dropped: int
    terminal: bool

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.data)

    @property
    def eof(self) -> bool:
        return self.terminal and self.next_offset >= self.total_size


@dataclass(frozen=True)
class Region:
    """A region that holds an account's instances, commands or invocations."""

    region_id: str
    instance_count: int = 0
    online_count: int = 0
    command_count: int = 0
