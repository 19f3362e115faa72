"""Shape and size rules for commands and invocations (the seed's limits); the checks of single
fields they share with other requests are in fields.py."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cloudassist.server.domain import reasons
from cloudassist.server.domain.environment import check_env
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.fields import (
    base64_size,
    check_instance_id,
    check_region,
    check_timeout,
    has_control_chars,
)
from cloudassist.server.domain.files import FileSpec
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
from cloudassist.server.domain.parameters import (
    check_parameter_values,
    parameters_size,
    parse_parameter_names,
)
from cloudassist.server.domain.paths import check_working_dir
from cloudassist.server.domain.rate_control import parse_max_concurrency, parse_max_errors
from cloudassist.server.domain.tags import check_tags


def _check_name(name: str, limits: Limits) -> str:
    if not name:
        raise InvalidArgument(reasons.MISSING_NAME, "name: required", field="name")
    if len(name) > limits.name_chars:
        raise InvalidArgument(
            reasons.CMD_NAME_EXCEED_LIMIT,
            f"name: {len(name)} characters, the limit is {limits.name_chars}",
            field="name",
        )
    if has_control_chars(name):
        raise InvalidArgument(
            reasons.CMD_NAME_INVALID_CHARACTER,
            "name: must not contain control characters",
            field="name",
        )
    return name


def _check_description(description: str, limits: Limits) -> str:
    if len(description) > limits.description_chars:
        raise InvalidArgument(
            reasons.CMD_DESC_EXCEED_LIMIT,
            f"description: {len(description)} characters, the limit is {limits.description_chars}",
            field="description",
        )
    if has_control_chars(description.replace("\n", "").replace("\t", "")):
        raise InvalidArgument(
            reasons.CMD_DESC_INVALID_CHARACTER,
            "description: must not contain control characters other than newline and tab",
            field="description",
        )
    return description


def _check_content(content: bytes, limits: Limits, extra: int = 0) -> bytes:
    if not content:
        raise InvalidArgument(
            reasons.MISSING_COMMAND_CONTENT, "command_content: required", field="command_content"
        )
    size = base64_size(len(content)) + extra
    if size > limits.content_bytes:
        what = "Base64 content plus parameters" if extra else "Base64 content"
        raise InvalidArgument(
            reasons.CMD_CONTENT_EXCEED_LIMIT,
            f"command_content: {what} is {size} bytes, the limit is {limits.content_bytes}",
            field="command_content",
            metadata={"size": str(size), "limit": str(limits.content_bytes)},
        )
    return content


def _check_username(username: str, limits: Limits) -> str:
    if len(username) > limits.username_chars:
        raise InvalidArgument(
            reasons.USERNAME_EXCEED_LIMIT,
            f"username: {len(username)} characters, the limit is {limits.username_chars}",
            field="username",
        )
    if has_control_chars(username) or "/" in username:
        raise InvalidArgument(
            reasons.INVALID_USERNAME,
            "username: must not contain '/' or control characters",
            field="username",
        )
    return username


SCRIPT_FILE = "{{ACS::ScriptFile}}"
LAUNCHER_CHARS = 1024


def check_launcher(launcher: str) -> str:
    """A launcher is a command line that names the script file once as {{ACS::ScriptFile}}."""
    if not launcher:
        return ""
    if len(launcher) > LAUNCHER_CHARS or launcher.count(SCRIPT_FILE) != 1:
        raise InvalidArgument(
            reasons.INVALID_LAUNCHER,
            f"launcher: must be at most {LAUNCHER_CHARS} characters and contain {SCRIPT_FILE} "
            "once (as in `python3 -u {{ACS::ScriptFile}}`)",
            field="launcher",
        )
    try:
        words = shlex.split(launcher)
    except ValueError as exc:
        raise InvalidArgument(
            reasons.INVALID_LAUNCHER, f"launcher: not a command line ({exc})", field="launcher"
        ) from exc
    if not words or words[0] == SCRIPT_FILE:
        raise InvalidArgument(
            reasons.INVALID_LAUNCHER,
            f"launcher: must start with the interpreter, then {SCRIPT_FILE}",
            field="launcher",
        )
    return launcher


def validate_command(draft: CommandDraft, limits: Limits) -> CommandSpec:
    """A CommandSpec from a client's draft, or InvalidArgument naming the first broken rule."""
    region_id = check_region(draft.region_id)
    name = _check_name(draft.name, limits)
    if draft.type is None:
        raise InvalidArgument(
            reasons.MISSING_COMMAND_TYPE,
            "type: required (COMMAND_TYPE_RUN_SHELL_SCRIPT, COMMAND_TYPE_RUN_BAT_SCRIPT or "
            "COMMAND_TYPE_RUN_POWERSHELL_SCRIPT)",
            field="type",
        )
    content = _check_content(draft.content, limits)
    names = (
        parse_parameter_names(content, limits.parameters_per_command)
        if draft.enable_parameter
        else []
    )
    return CommandSpec(
        region_id=region_id,
        name=name,
        type=draft.type,
        content=content,
        description=_check_description(draft.description, limits),
        working_dir=check_working_dir(draft.working_dir, draft.type, limits),
        timeout_seconds=check_timeout(draft.timeout_seconds, limits),
        enable_parameter=draft.enable_parameter,
        parameter_names=tuple(names),
        tags=check_tags(draft.tags),
        launcher=check_launcher(draft.launcher),
    )


def apply_patch(spec: CommandSpec, patch: CommandPatch, limits: Limits) -> CommandSpec:
    """The command after ModifyCommand, validated as a whole."""
    draft = CommandDraft(
        region_id=spec.region_id,
        name=spec.name if patch.name is None else patch.name,
        type=spec.type,
        content=spec.content if patch.content is None else patch.content,
        description=spec.description if patch.description is None else patch.description,
        working_dir=spec.working_dir if patch.working_dir is None else patch.working_dir,
        timeout_seconds=(
            spec.timeout_seconds if patch.timeout_seconds is None else patch.timeout_seconds
        ),
        enable_parameter=spec.enable_parameter,
        tags=tuple(spec.tags.items()),
        launcher=spec.launcher,
    )
    return validate_command(draft, limits)


def _check_instance_ids(instance_ids: Sequence[str], limits: Limits) -> tuple[str, ...]:
    if not instance_ids:
        raise InvalidArgument(
            reasons.MISSING_INSTANCE_IDS,
            "instance_ids: at least one is required",
            field="instance_ids",
        )
    if len(instance_ids) > limits.instances_per_invocation:
        raise InvalidArgument(
            reasons.INSTANCE_IDS_EXCEED_LIMIT,
            f"instance_ids: {len(instance_ids)} instances, the limit is "
            f"{limits.instances_per_invocation}",
            field="instance_ids",
            metadata={
                "count": str(len(instance_ids)),
                "limit": str(limits.instances_per_invocation),
            },
        )
    seen: set[str] = set()
    for instance_id in instance_ids:
        check_instance_id(instance_id, limits)
        if instance_id in seen:
            raise InvalidArgument(
                reasons.INVALID_INSTANCE_IDS,
                f"instance_ids: {instance_id!r} is listed twice",
                field="instance_ids",
                metadata={"instance_id": instance_id},
            )
        seen.add(instance_id)
    return tuple(instance_ids)


def repeat_mode_of(draft: InvocationDraft) -> RepeatMode:
    """Unspecified means ONCE, or PERIOD with the original API's `timed` flag."""
    if draft.repeat_mode is None:
        return RepeatMode.PERIOD if draft.timed else RepeatMode.ONCE
    if draft.timed and draft.repeat_mode is not RepeatMode.PERIOD:
        raise InvalidArgument(
            reasons.INVALID_REPEAT_MODE,
            f"timed: true contradicts repeat_mode {draft.repeat_mode.value}",
            field="timed",
        )
    return draft.repeat_mode


def validate_invocation(
    draft: InvocationDraft,
    command_id: str,
    command: CommandSpec,
    limits: Limits,
    check_frequency: Callable[[str, int], None],
) -> InvocationSpec:
    """An InvocationSpec for `command`, or InvalidArgument naming the first broken rule.

    `check_frequency(frequency, timeout_seconds)` validates a periodic schedule.
    """
    instance_ids = _check_instance_ids(draft.instance_ids, limits)
    repeat_mode = repeat_mode_of(draft)
    timeout = (
        command.timeout_seconds
        if draft.timeout_seconds is None
        else check_timeout(draft.timeout_seconds, limits)
    )
    if repeat_mode is RepeatMode.PERIOD:
        if not draft.frequency.strip():
            raise InvalidArgument(
                reasons.MISSING_FREQUENCY,
                "frequency: required for a periodic invocation",
                field="frequency",
            )
        check_frequency(draft.frequency, timeout)
    elif draft.frequency:
        raise InvalidArgument(
            reasons.INVALID_FREQUENCY,
            f"frequency: only a periodic invocation has one (repeat_mode is {repeat_mode.value})",
            field="frequency",
        )
    check_parameter_values(
        command.parameter_names,
        draft.parameters,
        enable_parameter=command.enable_parameter,
        max_count=limits.parameters_per_command,
    )
    _check_content(command.content, limits, extra=parameters_size(draft.parameters))
    # The command's own is checked again: it may have been stored before the rule was.
    working_dir = (
        check_working_dir(command.working_dir, command.type, limits, "the command's ")
        if draft.working_dir is None
        else check_working_dir(draft.working_dir, command.type, limits)
    )
    max_concurrency = parse_max_concurrency(draft.max_concurrency, len(instance_ids))
    max_errors = parse_max_errors(draft.max_errors, len(instance_ids))
    if repeat_mode is not RepeatMode.ONCE and (max_concurrency, max_errors) != (None, None):
        raise InvalidArgument(
            reasons.INVALID_MAX_CONCURRENCY if max_concurrency else reasons.INVALID_MAX_ERRORS,
            "max_concurrency, max_errors: only for an invocation that runs once",
            field="max_concurrency" if max_concurrency else "max_errors",
        )
    return InvocationSpec(
        region_id=command.region_id,
        command_id=command_id,
        command_name=command.name,
        command_type=command.type,
        content=command.content,
        enable_parameter=command.enable_parameter,
        parameters=dict(draft.parameters),
        instance_ids=instance_ids,
        repeat_mode=repeat_mode,
        frequency=draft.frequency,
        timeout_seconds=timeout,
        working_dir=working_dir,
        username=_check_username(draft.username, limits),
        env=check_env(draft.env, limits),
        launcher=command.launcher,
        max_concurrency=max_concurrency,
        max_errors=max_errors,
    )


@dataclass(frozen=True)
class InvocationChange:
    """What ModifyInvocationAttribute changes; None: unchanged."""

    content: bytes | None = None
    parameters: dict[str, str] | None = None
    frequency: str | None = None
    added_instance_ids: tuple[str, ...] = ()

    def empty(self) -> bool:
        return (
            self.content is None
            and self.parameters is None
            and self.frequency is None
            and not self.added_instance_ids
        )


def apply_invocation_change(
    spec: InvocationSpec,
    change: InvocationChange,
    limits: Limits,
    check_frequency: Callable[[str, int], None],
) -> InvocationSpec:
    """The periodic invocation after ModifyInvocationAttribute, checked by every rule an
    invocation is made under."""
    if change.empty():
        raise InvalidArgument(
            reasons.NOTHING_TO_MODIFY,
            "command_content, parameters, frequency or instance_ids: give at least one change",
            field="invoke_id",
        )
    for instance_id in change.added_instance_ids:
        if instance_id in spec.instance_ids:
            raise InvalidArgument(
                reasons.INVALID_INSTANCE_IDS,
                f"instance_ids: {instance_id!r} is already an instance of the invocation",
                field="instance_ids",
                metadata={"instance_id": instance_id},
            )
    content = spec.content if change.content is None else change.content
    command = CommandSpec(
        region_id=spec.region_id,
        name=spec.command_name,
        type=spec.command_type,
        content=_check_content(content, limits),
        description="",
        working_dir=spec.working_dir,
        timeout_seconds=spec.timeout_seconds,
        enable_parameter=spec.enable_parameter,
        parameter_names=tuple(
            parse_parameter_names(content, limits.parameters_per_command)
            if spec.enable_parameter
            else ()
        ),
        launcher=spec.launcher,
    )
    draft = InvocationDraft(
        region_id=spec.region_id,
        command_id=spec.command_id,
        instance_ids=(*spec.instance_ids, *change.added_instance_ids),
        parameters=spec.parameters if change.parameters is None else change.parameters,
        repeat_mode=spec.repeat_mode,
        frequency=spec.frequency if change.frequency is None else change.frequency,
        timeout_seconds=spec.timeout_seconds,
        working_dir=spec.working_dir,
        username=spec.username,
        env=spec.env,
    )
    return validate_invocation(draft, spec.command_id, command, limits, check_frequency)


def validate_file_invocation(
    region_id: str,
    instance_ids: Sequence[str],
    file: FileSpec,
    content: bytes,
    timeout_seconds: int,
    limits: Limits,
) -> InvocationSpec:
    """A SendFile as an invocation: each instance's task writes the file instead of running
    a script (agents on Linux)."""
    return InvocationSpec(
        region_id=check_region(region_id),
        command_id="",
        command_name=file.name,
        command_type=CommandType.RUN_SHELL_SCRIPT,
        content=content,
        enable_parameter=False,
        parameters={},
        instance_ids=_check_instance_ids(instance_ids, limits),
        repeat_mode=RepeatMode.ONCE,
        frequency="",
        timeout_seconds=check_timeout(timeout_seconds, limits),
        working_dir="",
        username="",
        file=file,
    )
