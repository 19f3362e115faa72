"""CommandService: protobuf in, plane call, protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from cloudassist.common.clock import now_ms
from cloudassist.server.api import convert
from cloudassist.server.api.errors import stream_errors, unary_errors
from cloudassist.server.auth import principal
from cloudassist.server.planes.changes import ChangePlane
from cloudassist.server.planes.commands import CommandPlane
from cloudassist.server.planes.invocations import InvocationPlane
from cloudassist.server.planes.results import ResultPlane
from cloudassist.server.planes.watch import OutputEvent, WatchEvent, WatchPlane
from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc

Context = aio.ServicerContext[Any, Any]


class CommandService(command_pb2_grpc.CommandServiceServicer):
    def __init__(
        self,
        commands: CommandPlane,
        invocations: InvocationPlane,
        changes: ChangePlane,
        results: ResultPlane,
        watch: WatchPlane,
    ) -> None:
        self._commands = commands
        self._invocations = invocations
        self._changes = changes
        self._results = results
        self._watch = watch

    @unary_errors
    async def CreateCommand(
        self, request: pb.CreateCommandRequest, context: Context
    ) -> pb.CreateCommandResponse:
        command_id = await self._commands.create_command(
            principal().account_id, convert.command_draft(request), request.client_token
        )
        return pb.CreateCommandResponse(command_id=command_id)

    @unary_errors
    async def ModifyCommand(
        self, request: pb.ModifyCommandRequest, context: Context
    ) -> pb.ModifyCommandResponse:
        await self._commands.modify_command(
            principal().account_id,
            request.region_id,
            request.command_id,
            convert.command_patch(request),
        )
        return pb.ModifyCommandResponse()

    @unary_errors
    async def DescribeCommands(
        self, request: pb.DescribeCommandsRequest, context: Context
    ) -> pb.DescribeCommandsResponse:
        listing = await self._commands.describe_commands(
            principal().account_id,
            request.region_id,
            request.command_id,
            request.name,
            convert.command_type_from(request.type),
            request.page_size,
            request.page_token,
            [(t.key, t.value) for t in request.tags],
        )
        return pb.DescribeCommandsResponse(
            commands=[convert.command_to(c) for c in listing.items],
            total_count=listing.total_count,
            next_page_token=listing.next_page_token,
        )

    @unary_errors
    async def DeleteCommand(
        self, request: pb.DeleteCommandRequest, context: Context
    ) -> pb.DeleteCommandResponse:
        await self._commands.delete_command(
            principal().account_id, request.region_id, request.command_id
        )
        return pb.DeleteCommandResponse()

    @unary_errors
    async def InvokeCommand(
        self, request: pb.InvokeCommandRequest, context: Context
    ) -> pb.InvokeCommandResponse:
        started = await self._invocations.invoke(
            principal().account_id,
            convert.invocation_draft(request),
            request.client_token,
            dry_run=request.dry_run,
        )
        return pb.InvokeCommandResponse(
            invoke_id=started.invoke_id, dry_run=convert.dry_run_to(started.dry_run)
        )

    @unary_errors
    async def SendFile(self, request: pb.SendFileRequest, context: Context) -> pb.SendFileResponse:
        draft, targets = convert.file_draft(request)
        invoke_id = await self._invocations.send_file(
            principal().account_id, draft, targets, request.timeout_seconds, request.client_token
        )
        return pb.SendFileResponse(invoke_id=invoke_id)

    @unary_errors
    async def DescribeSendFileResults(
        self, request: pb.DescribeSendFileResultsRequest, context: Context
    ) -> pb.DescribeSendFileResultsResponse:
        listing = await self._results.describe_file_results(
            principal().account_id,
            request.region_id,
            request.invoke_id,
            request.instance_id,
            request.page_size,
            request.page_token,
        )
        return pb.DescribeSendFileResultsResponse(
            results=[convert.file_result_to(record, file) for record, file in listing.items],
            total_count=listing.total_count,
            next_page_token=listing.next_page_token,
        )

    @unary_errors
    async def ModifyInvocationAttribute(
        self, request: pb.ModifyInvocationAttributeRequest, context: Context
    ) -> pb.ModifyInvocationAttributeResponse:
        await self._changes.modify_invocation(
            principal().account_id,
            request.region_id,
            request.invoke_id,
            convert.invocation_change(request),
        )
        return pb.ModifyInvocationAttributeResponse()

    @unary_errors
    async def RunCommand(
        self, request: pb.RunCommandRequest, context: Context
    ) -> pb.RunCommandResponse:
        started = await self._invocations.run(
            principal().account_id,
            convert.command_draft(request),
            convert.run_invocation_draft(request),
            request.keep_command,
            request.client_token,
            dry_run=request.dry_run,
        )
        return pb.RunCommandResponse(
            command_id=started.command_id,
            invoke_id=started.invoke_id,
            dry_run=convert.dry_run_to(started.dry_run),
        )

    @unary_errors
    async def DescribeInvocations(
        self, request: pb.DescribeInvocationsRequest, context: Context
    ) -> pb.DescribeInvocationsResponse:
        listing = await self._results.describe_invocations(
            principal().account_id,
            request.region_id,
            request.invoke_id,
            request.command_id,
            request.instance_id,
            convert.invoke_status_from(request.invoke_status, "invoke_status"),
            request.page_size,
            request.page_token,
            request.command_name,
        )
        return pb.DescribeInvocationsResponse(
            invocations=[convert.invocation_to(i) for i in listing.items],
            total_count=listing.total_count,
            next_page_token=listing.next_page_token,
        )

    @unary_errors
    async def RerunInvocation(
        self, request: pb.RerunInvocationRequest, context: Context
    ) -> pb.RerunInvocationResponse:
        rerun = await self._invocations.rerun(
            principal().account_id,
            request.region_id,
            request.invoke_id,
            convert.states_from(request.states, "states"),
            list(request.instance_ids),
            request.client_token,
        )
        return pb.RerunInvocationResponse(
            invoke_id=rerun.invoke_id,
            command_id=rerun.command_id,
            instance_ids=list(rerun.instance_ids),
        )

    @unary_errors
    async def DescribeInvocationResults(
        self, request: pb.DescribeInvocationResultsRequest, context: Context
    ) -> pb.DescribeInvocationResultsResponse:
        listing = await self._results.describe_results(
            principal().account_id,
            request.region_id,
            request.invoke_id,
            request.instance_id,
            request.command_id,
            convert.invoke_status_from(request.invoke_record_status, "invoke_record_status"),
            request.include_history,
            request.page_size,
            request.page_token,
        )
        return pb.DescribeInvocationResultsResponse(
            invocation_results=[convert.result_to(r, tail) for r, tail in listing.items],
            total_count=listing.total_count,
            next_page_token=listing.next_page_token,
        )

    @unary_errors
    async def GetInvocationOutput(
        self, request: pb.GetInvocationOutputRequest, context: Context
    ) -> pb.GetInvocationOutputResponse:
        output = await self._watch.get_output(
            principal().account_id,
            request.region_id,
            request.invoke_id,
            request.instance_id,
            request.record_id,
            request.offset,
            request.limit,
        )
        return convert.output_to(output)

    @unary_errors
    async def StopInvocation(
        self, request: pb.StopInvocationRequest, context: Context
    ) -> pb.StopInvocationResponse:
        await self._changes.stop(
            principal().account_id, request.region_id, request.invoke_id, list(request.instance_ids)
        )
        return pb.StopInvocationResponse()

    @stream_errors
    async def WatchInvocation(
        self, request: pb.WatchInvocationRequest, context: Context
    ) -> AsyncIterator[pb.WatchInvocationResponse]:
        async for events in self._watch.watch(
            principal().account_id, request.region_id, request.invoke_id, request.instance_id
        ):
            now = now_ms()
            responses = [_watch_event(event, now) for event in events]
            if request.batch:
                yield pb.WatchInvocationResponse(events=responses)
            else:
                for response in responses:
                    yield response

    @unary_errors
    async def PreviewSchedule(
        self, request: pb.PreviewScheduleRequest, context: Context
    ) -> pb.PreviewScheduleResponse:
        preview = self._invocations.preview_schedule(
            request.region_id,
            request.frequency,
            request.timeout_seconds if request.HasField("timeout_seconds") else None,
            request.count,
        )
        return convert.preview_to(preview)


def _watch_event(event: WatchEvent, now: int) -> pb.WatchInvocationResponse:
    if isinstance(event, OutputEvent):
        return pb.WatchInvocationResponse(
            output=pb.OutputChunk(
                instance_id=event.instance_id,
                record_id=event.record_id,
                offset=event.offset,
                data=event.data,
            )
        )
    return pb.WatchInvocationResponse(
        state_change=convert.state_change_to(event.record, event.invocation_status, now)
    )
