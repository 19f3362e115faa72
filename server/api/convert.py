"""Protobuf messages to domain values and back."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.timestamp_pb2 import Timestamp

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.files import FileDraft, FileSpec
from cloudassist.server.domain.model import (
    Command,
    CommandDraft,
    CommandPatch,
    CommandType,
    Instance,
    Invocation,
    InvocationDraft,
    InvokeInstance,
    OsType,
    OutputSlice,
    Record,
    RepeatMode,
    runs_on,
)
from cloudassist.server.domain.schedule_preview import Preview
from cloudassist.server.domain.status import ExecutionState, InvokeStatus, coarse_status
from cloudassist.server.domain.validation import InvocationChange
from cloudassist.server.planes.invocations import DryRun
from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import instance_pb2 as instance_pb
from cloudassist.v1 import tag_pb2 as tag_pb


def timestamp(ms: int | None) -> Timestamp | None:
    if ms is None:
        return None
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def milliseconds(ts: Timestamp, field: str) -> int:
    """A Timestamp as milliseconds; INVALID_ARGUMENT when it is out of Timestamp's range."""
    try:
        return ts.ToMilliseconds()
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(
            reasons.INVALID_TIMESTAMP,
            f"{field}: not a valid timestamp (seconds within years 1-9999, nanos 0-999999999)",
            field=field,
        ) from exc


def command_type_from(value: int, field: str = "type") -> CommandType | None:
    if value == pb.COMMAND_TYPE_UNSPECIFIED:
        return None
    if value not in pb.CommandType.values():
        raise InvalidArgument(
            reasons.INVALID_COMMAND_TYPE, f"{field}: unknown command type {value}", field=field
        )
    return CommandType(pb.CommandType.Name(value).removeprefix("COMMAND_TYPE_"))  # type: ignore[arg-type]


def command_type_to(value: CommandType) -> pb.CommandType.ValueType:
    return pb.CommandType.Value(f"COMMAND_TYPE_{value.value}")


def repeat_mode_from(value: int) -> RepeatMode | None:
    if value == pb.REPEAT_MODE_UNSPECIFIED:
        return None
    if value not in pb.RepeatMode.values():
        raise InvalidArgument(
            reasons.INVALID_REPEAT_MODE,
            f"repeat_mode: unknown repeat mode {value}",
            field="repeat_mode",
        )
    return RepeatMode(pb.RepeatMode.Name(value).removeprefix("REPEAT_MODE_"))  # type: ignore[arg-type]


def repeat_mode_to(value: RepeatMode) -> pb.RepeatMode.ValueType:
    return pb.RepeatMode.Value(f"REPEAT_MODE_{value.value}")


def invoke_status_from(value: int, field: str) -> InvokeStatus | None:
    if value == pb.INVOKE_STATUS_UNSPECIFIED:
        return None
    if value not in pb.InvokeStatus.values():
        raise InvalidArgument(
            reasons.INVALID_FILTER, f"{field}: unknown status {value}", field=field
        )
    return InvokeStatus(pb.InvokeStatus.Name(value).removeprefix("INVOKE_STATUS_"))  # type: ignore[arg-type]


def invoke_status_to(value: InvokeStatus) -> pb.InvokeStatus.ValueType:
    return pb.InvokeStatus.Value(f"INVOKE_STATUS_{value.value}")


def state_to(value: ExecutionState) -> pb.ExecutionState.ValueType:
    return pb.ExecutionState.Value(f"EXECUTION_STATE_{value.value}")


def states_from(values: Iterable[int], field: str) -> list[ExecutionState]:
    """Execution states; INVALID_ARGUMENT for an unknown or unspecified one."""
    states = []
    for value in values:
        if value == pb.EXECUTION_STATE_UNSPECIFIED or value not in pb.ExecutionState.values():
            raise InvalidArgument(
                reasons.INVALID_RERUN_STATES,
                f"{field}: {value} is not an execution state (EXECUTION_STATE_FAILED, ...)",
                field=field,
            )
        name = pb.ExecutionState.Name(value).removeprefix("EXECUTION_STATE_")  # type: ignore[arg-type]
        states.append(ExecutionState(name))
    return states


def os_type_to(value: OsType) -> instance_pb.OsType.ValueType:
    return instance_pb.OsType.Value(f"OS_TYPE_{value.value}")


def os_type_from(value: int) -> OsType | None:
    if value not in instance_pb.OsType.values() or value == instance_pb.OS_TYPE_UNSPECIFIED:
        return None
    return OsType(instance_pb.OsType.Name(value).removeprefix("OS_TYPE_"))  # type: ignore[arg-type]


def command_draft(request: pb.CreateCommandRequest | pb.RunCommandRequest) -> CommandDraft:
    return CommandDraft(
        region_id=request.region_id,
        name=request.name,
        type=command_type_from(request.type),
        content=request.command_content,
        description=request.description,
        working_dir=request.working_dir,
        timeout_seconds=request.timeout_seconds,
        enable_parameter=request.enable_parameter,
        tags=tuple((t.key, t.value) for t in request.tags)
        if isinstance(request, pb.CreateCommandRequest)
        else (),
        launcher=request.launcher,
    )


def command_patch(request: pb.ModifyCommandRequest) -> CommandPatch:
    return CommandPatch(
        name=request.name if request.HasField("name") else None,
        description=request.description if request.HasField("description") else None,
        working_dir=request.working_dir if request.HasField("working_dir") else None,
        timeout_seconds=(request.timeout_seconds if request.HasField("timeout_seconds") else None),
        content=request.command_content if request.HasField("command_content") else None,
    )


def invocation_draft(request: pb.InvokeCommandRequest) -> InvocationDraft:
    return InvocationDraft(
        region_id=request.region_id,
        command_id=request.command_id,
        instance_ids=tuple(request.instance_ids),
        parameters=dict(request.parameters),
        repeat_mode=repeat_mode_from(request.repeat_mode),
        frequency=request.frequency,
        timed=request.timed,
        timeout_seconds=request.timeout_seconds if request.HasField("timeout_seconds") else None,
        working_dir=request.working_dir if request.HasField("working_dir") else None,
        username=request.username,
        env=dict(request.env),
        resource_tags=tuple((t.key, t.value) for t in request.resource_tags),
        max_concurrency=request.max_concurrency,
        max_errors=request.max_errors,
    )


def run_invocation_draft(request: pb.RunCommandRequest) -> InvocationDraft:
    return InvocationDraft(
        region_id=request.region_id,
        command_id="",
        instance_ids=tuple(request.instance_ids),
        parameters=dict(request.parameters),
        repeat_mode=repeat_mode_from(request.repeat_mode),
        frequency=request.frequency,
        timed=request.timed,
        username=request.username,
        env=dict(request.env),
        resource_tags=tuple((t.key, t.value) for t in request.resource_tags),
        max_concurrency=request.max_concurrency,
        max_errors=request.max_errors,
    )


def command_to(command: Command) -> pb.Command:
    spec = command.spec
    return pb.Command(
        command_id=command.command_id,
        region_id=spec.region_id,
        name=spec.name,
        type=command_type_to(spec.type),
        command_content=spec.content,
        description=spec.description,
        working_dir=spec.working_dir,
        timeout_seconds=spec.timeout_seconds,
        enable_parameter=spec.enable_parameter,
        parameter_names=list(spec.parameter_names),
        invoke_times=command.invoke_times,
        creation_time=timestamp(command.created_ms),
        tags=[tag_pb.Tag(key=k, value=v) for k, v in sorted(spec.tags.items())],
        launcher=spec.launcher,
    )


def invoke_instance_to(member: InvokeInstance) -> pb.InvokeInstance:
    return pb.InvokeInstance(
        instance_id=member.instance_id,
        instance_invoke_status=invoke_status_to(member.status),
        state=state_to(member.state),
        repeats=member.repeats,
        exit_code=member.exit_code,
        error_code=member.error_code,
        error_info=member.error_info,
        creation_time=timestamp(member.created_ms),
        start_time=timestamp(member.start_ms),
        finish_time=timestamp(member.finish_ms),
        stop_time=timestamp(member.stop_ms),
        update_time=timestamp(member.updated_ms),
    )


def invocation_to(invocation: Invocation) -> pb.Invocation:
    spec = invocation.spec
    return pb.Invocation(
        invoke_id=invocation.invoke_id,
        region_id=spec.region_id,
        command_id=spec.command_id,
        command_name=spec.command_name,
        command_type=command_type_to(spec.command_type),
        command_content=spec.content,
        parameters=spec.parameters,
        repeat_mode=repeat_mode_to(spec.repeat_mode),
        frequency=spec.frequency,
        timed=spec.repeat_mode is RepeatMode.PERIOD,
        timeout_seconds=spec.timeout_seconds,
        working_dir=spec.working_dir,
        username=spec.username,
        env=spec.env,
        max_concurrency="" if spec.max_concurrency is None else str(spec.max_concurrency),
        max_errors="" if spec.max_errors is None else str(spec.max_errors),
        invoke_status=invoke_status_to(invocation.status),
        creation_time=timestamp(invocation.created_ms),
        invoke_instances=[invoke_instance_to(m) for m in invocation.instances],
    )


def result_to(record: Record, tail: bytes) -> pb.InvocationResult:
    return pb.InvocationResult(
        invoke_id=record.invoke_id,
        instance_id=record.instance_id,
        record_id=record.record_id,
        command_id=record.command_id,
        region_id=record.region_id,
        invoke_record_status=invoke_status_to(coarse_status(record.state)),
        state=state_to(record.state),
        exit_code=record.exit_code,
        output=tail,
        output_size=record.output_size,
        truncated=len(tail) < record.output_size,
        dropped=record.dropped,
        error_code=record.error_code,
        error_info=record.error_info,
        username=record.username,
        repeats=record.repeats,
        creation_time=timestamp(record.created_ms),
        start_time=timestamp(record.start_ms),
        finish_time=timestamp(record.finish_ms),
        stop_time=timestamp(record.stop_ms),
    )


def state_change_to(record: Record, invocation_status: InvokeStatus, now_ms: int) -> pb.StateChange:
    return pb.StateChange(
        instance_id=record.instance_id,
        record_id=record.record_id,
        state=state_to(record.state),
        invoke_record_status=invoke_status_to(coarse_status(record.state)),
        exit_code=record.exit_code,
        error_code=record.error_code,
        error_info=record.error_info,
        output_size=record.output_size,
        dropped=record.dropped,
        invoke_status=invoke_status_to(invocation_status),
        time=timestamp(now_ms),
    )


def instance_to(instance: Instance) -> instance_pb.Instance:
    return instance_pb.Instance(
        instance_id=instance.instance_id,
        region_id=instance.region_id,
        os_type=os_type_to(instance.os_type),
        hostname=instance.hostname,
        agent_version=instance.agent_version,
        online=instance.online,
        last_heartbeat_time=timestamp(instance.last_heartbeat_ms),
        active_task_count=instance.active_task_count,
        invocation_count=instance.invocation_count,
        last_invoked_time=timestamp(instance.last_invoked_ms),
        registration_time=timestamp(instance.registered_ms),
        tags=[tag_pb.Tag(key=k, value=v) for k, v in sorted(instance.tags.items())],
        command_types=[
            command_type_to(t)
            for t in CommandType
            if runs_on(t, instance.os_type, instance.extra_command_types)
        ],
    )


def dry_run_to(dry_run: DryRun | None) -> pb.DryRun | None:
    if dry_run is None:
        return None
    return pb.DryRun(
        tasks=[
            pb.DryRunTask(
                instance_id=t.instance_id,
                online=t.online,
                command_type=command_type_to(t.task.command_type),
                script=t.task.script,
                timeout_seconds=t.task.timeout_seconds,
                working_dir=t.task.working_dir,
                username=t.task.username,
                env=t.task.env,
            )
            for t in dry_run.tasks
        ],
        first_fire_time=timestamp(dry_run.first_fire_ms),
    )


def output_to(output: OutputSlice) -> pb.GetInvocationOutputResponse:
    return pb.GetInvocationOutputResponse(
        data=output.data,
        next_offset=output.next_offset,
        total_size=output.total_size,
        dropped=output.dropped,
        eof=output.eof,
        record_id=output.record_id,
    )


def preview_to(preview: Preview) -> pb.PreviewScheduleResponse:
    return pb.PreviewScheduleResponse(
        fire_times=[
            pb.FireTime(time=timestamp(f.time_ms), local_time=f.local_time)
            for f in preview.fire_times
        ],
        time_zone=preview.time_zone,
    )


def invocation_change(request: pb.ModifyInvocationAttributeRequest) -> InvocationChange:
    if request.parameters and not request.replace_parameters:
        raise InvalidArgument(
            reasons.INVALID_PARAMETERS_CHANGE,
            "parameters: set replace_parameters to replace the invocation's parameters",
            field="replace_parameters",
        )
    return InvocationChange(
        content=request.command_content if request.HasField("command_content") else None,
        parameters=dict(request.parameters) if request.replace_parameters else None,
        frequency=request.frequency if request.HasField("frequency") else None,
        added_instance_ids=tuple(request.instance_ids),
    )


def file_draft(request: pb.SendFileRequest) -> tuple[FileDraft, InvocationDraft]:
    if request.content_type not in pb.ContentType.values():
        raise InvalidArgument(
            reasons.FILE_CONTENT_INVALID,
            f"content_type: unknown content type {request.content_type}",
            field="content_type",
        )
    draft = FileDraft(
        name=request.name,
        target_dir=request.target_dir,
        content=request.content,
        base64=request.content_type == pb.CONTENT_TYPE_BASE64,
        mode=request.file_mode,
        owner=request.file_owner,
        group=request.file_group,
        overwrite=request.overwrite,
    )
    targets = InvocationDraft(
        region_id=request.region_id,
        command_id="",
        instance_ids=tuple(request.instance_ids),
        resource_tags=tuple((t.key, t.value) for t in request.resource_tags),
    )
    return draft, targets


def file_result_to(record: Record, file: FileSpec) -> pb.SendFileResult:
    return pb.SendFileResult(
        invoke_id=record.invoke_id,
        instance_id=record.instance_id,
        name=file.name,
        target_dir=file.target_dir,
        state=state_to(record.state),
        invoke_record_status=invoke_status_to(coarse_status(record.state)),
        error_code=record.error_code,
        error_info=record.error_info,
        creation_time=timestamp(record.created_ms),
        finish_time=timestamp(record.finish_ms or record.stop_ms),
    )
