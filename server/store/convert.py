"""Rows to domain values."""

from __future__ import annotations

import json
from typing import Any

from cloudassist.server.domain.files import FileSpec
from cloudassist.server.domain.model import (
    Command,
    CommandSpec,
    CommandType,
    Instance,
    InvocationSpec,
    InvokeInstance,
    OsType,
    Record,
    RepeatMode,
)
from cloudassist.server.domain.status import ExecutionState, InvokeStatus


def command(row: Any) -> Command:
    spec = CommandSpec(
        region_id=row.region_id,
        name=row.name,
        type=CommandType(row.type),
        content=bytes(row.content),
        description=row.description,
        working_dir=row.working_dir,
        timeout_seconds=row.timeout_seconds,
        enable_parameter=bool(row.enable_parameter),
        parameter_names=tuple(json.loads(row.parameter_names)),
        launcher=row.launcher,
    )
    return Command(
        command_id=row.command_id,
        spec=spec,
        invoke_times=row.invoke_times,
        created_ms=row.created_ms,
    )


def invocation_spec(row: Any, instance_ids: tuple[str, ...]) -> InvocationSpec:
    return InvocationSpec(
        region_id=row.region_id,
        command_id=row.command_id,
        command_name=row.command_name,
        command_type=CommandType(row.command_type),
        content=bytes(row.content),
        enable_parameter=bool(row.enable_parameter),
        parameters=json.loads(row.parameters),
        instance_ids=instance_ids,
        repeat_mode=RepeatMode(row.repeat_mode),
        frequency=row.frequency,
        timeout_seconds=row.timeout_seconds,
        working_dir=row.working_dir,
        username=row.username,
        env=json.loads(row.env),
        launcher=row.launcher,
        max_concurrency=row.max_concurrency,
        max_errors=row.max_errors,
        file=FileSpec(**json.loads(row.file)) if row.file else None,
    )


def invoke_instance(row: Any) -> InvokeInstance:
    return InvokeInstance(
        instance_id=row.instance_id,
        state=ExecutionState(row.state),
        status=InvokeStatus(row.status),
        repeats=row.repeats,
        exit_code=row.exit_code,
        error_code=row.error_code,
        error_info=row.error_info,
        created_ms=row.created_ms,
        start_ms=row.start_ms,
        finish_ms=row.finish_ms,
        stop_ms=row.stop_ms,
        updated_ms=row.updated_ms,
    )


def record(row: Any, region_id: str, command_id: str, username: str) -> Record:
    return Record(
        record_id=row.record_id,
        invoke_id=row.invoke_id,
        instance_id=row.instance_id,
        command_id=command_id,
        region_id=region_id,
        username=username,
        state=ExecutionState(row.state),
        exit_code=row.exit_code,
        output_size=row.output_size,
        dropped=row.dropped,
        error_code=row.error_code,
        error_info=row.error_info,
        repeats=row.repeats,
        created_ms=row.created_ms,
        start_ms=row.start_ms,
        finish_ms=row.finish_ms,
        stop_ms=row.stop_ms,
    )


def instance(row: Any, active_task_count: int, tags: dict[str, str] | None = None) -> Instance:
    return Instance(
        instance_id=row.instance_id,
        region_id=row.region_id,
        os_type=OsType(row.os_type),
        hostname=row.hostname,
        agent_version=row.agent_version,
        online=bool(row.online),
        last_heartbeat_ms=row.last_heartbeat_ms,
        registered_ms=row.registered_ms,
        invocation_count=row.invocation_count,
        last_invoked_ms=row.last_invoked_ms,
        active_task_count=active_task_count,
        tags=dict(tags or {}),
        extra_command_types=frozenset(CommandType(t) for t in json.loads(row.extra_command_types)),
    )
