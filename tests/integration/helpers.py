"""Async helpers for driving a real server over gRPC in tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc

REGION = "cn-hangzhou"


@dataclass
class Watched:
    """What WatchInvocation delivered: output per instance (its records' in turn) and per
    record, and the last state per instance."""

    output: dict[str, bytearray] = field(default_factory=dict)
    by_record: dict[str, bytearray] = field(default_factory=dict)
    states: dict[str, pb.StateChange] = field(default_factory=dict)
    events: list[pb.WatchInvocationResponse] = field(default_factory=list)
    messages: int = 0  # responses received (fewer than events when batched)

    def take(self, event: pb.WatchInvocationResponse) -> None:
        self.events.append(event)
        if event.HasField("output"):
            chunk = event.output
            record = self.by_record.setdefault(chunk.record_id, bytearray())
            assert chunk.offset == len(record), "output arrives in order, without gaps"
            record += chunk.data
            self.output.setdefault(chunk.instance_id, bytearray()).extend(chunk.data)
        else:
            self.states[event.state_change.instance_id] = event.state_change


async def watch(
    stub: command_pb2_grpc.CommandServiceStub,
    invoke_id: str,
    region: str = REGION,
    batch: bool = False,
) -> Watched:
    """Follows an invocation until the server ends the stream (every record over); with
    `batch`, takes the events in batches (`messages` counts what arrived either way)."""
    seen = Watched()
    async for response in stub.WatchInvocation(
        pb.WatchInvocationRequest(region_id=region, invoke_id=invoke_id, batch=batch)
    ):
        seen.messages += 1
        if batch:
            assert not response.WhichOneof("event"), "a batch holds its events in `events`"
            assert response.events, "no empty batches"
        events = list(response.events) if batch else [response]
        for event in events:
            seen.take(event)
    return seen


async def run(
    stub: command_pb2_grpc.CommandServiceStub,
    script: str | bytes,
    instances: list[str],
    **fields: object,
) -> str:
    content = script.encode() if isinstance(script, str) else script
    response = await stub.RunCommand(
        pb.RunCommandRequest(
            region_id=REGION,
            type=pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
            command_content=content,
            instance_ids=instances,
            **fields,  # type: ignore[arg-type]
        )
    )
    return response.invoke_id


async def results(
    stub: command_pb2_grpc.CommandServiceStub, invoke_id: str
) -> dict[str, pb.InvocationResult]:
    response = await stub.DescribeInvocationResults(
        pb.DescribeInvocationResultsRequest(region_id=REGION, invoke_id=invoke_id, page_size=50)
    )
    return {r.instance_id: r for r in response.invocation_results}


async def invocation(stub: command_pb2_grpc.CommandServiceStub, invoke_id: str) -> pb.Invocation:
    response = await stub.DescribeInvocations(
        pb.DescribeInvocationsRequest(region_id=REGION, invoke_id=invoke_id)
    )
    assert len(response.invocations) == 1
    return response.invocations[0]


async def read_output(
    stub: command_pb2_grpc.CommandServiceStub, invoke_id: str, instance_id: str
) -> tuple[bytes, pb.GetInvocationOutputResponse]:
    """The whole stored output through GetInvocationOutput, and the last response."""
    data = bytearray()
    while True:
        response = await stub.GetInvocationOutput(
            pb.GetInvocationOutputRequest(
                region_id=REGION, invoke_id=invoke_id, instance_id=instance_id, offset=len(data)
            )
        )
        assert response.next_offset == len(data) + len(response.data)
        data += response.data
        if response.eof or not response.data:
            return bytes(data), response


def error_details(error: aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, list[str]]:
    """The ErrorInfo and the BadRequest field names of a rejected call."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            info = error_details_pb2.ErrorInfo()
            fields: list[str] = []
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    detail.Unpack(info)
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    fields += [v.field for v in bad.field_violations]
            return info, fields
    raise AssertionError(f"no rich status details on {error.code()}: {error.details()}")
