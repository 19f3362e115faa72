"""Following an invocation (WatchInvocation) until it ends, and the exit code it ends with.

Three ways to show it: plain output (instance-prefixed lines when there are several instances:
what pipes and files get), the live view (client/progress.py, for terminals), or JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

from grpc import aio

from cloudassist.client import render
from cloudassist.client.progress import (
    InstanceProgress,
    LiveView,
    apply_change,
    apply_results,
    line_prefix,
)
from cloudassist.client.style import PLAIN, Palette
from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc

# Exit codes of run, watch and invoke --watch beside the remote script's own.
EXIT_TIMEOUT = 124
EXIT_NOT_RUN = 125
EXIT_STOPPED = 130

Mode = Literal["plain", "live", "json"]

# How often the live view's elapsed time moves on.
TICK_SECONDS = 0.2
RESULTS_PAGE = 50


def exit_code_of(progress: Mapping[str, InstanceProgress]) -> int:
    """0 when every record succeeded; else the first failing instance's code (by id)."""
    for instance_id in sorted(progress):
        p = progress[instance_id]
        if p.state == pb.EXECUTION_STATE_SUCCESS:
            continue
        if p.state == pb.EXECUTION_STATE_FAILED:
            return p.exit_code if p.exit_code is not None else EXIT_NOT_RUN
        if p.state == pb.EXECUTION_STATE_TIMEOUT:
            return EXIT_TIMEOUT
        if p.state in (pb.EXECUTION_STATE_CANCELLED, pb.EXECUTION_STATE_TERMINATED):
            return EXIT_STOPPED
        return EXIT_NOT_RUN
    return 0


def summary_json(
    invoke_id: str, progress: Mapping[str, InstanceProgress], code: int
) -> dict[str, Any]:
    """The last JSON line of run and watch: `{"summary": {...}}`."""
    return {
        "summary": {
            "invoke_id": invoke_id,
            "exit_code": code,
            "instances": [
                {
                    "instance_id": p.instance_id,
                    "record_id": p.record_id,
                    "state": pb.ExecutionState.Name(p.state),
                    "exit_code": p.exit_code,
                    "error_code": p.error_code,
                    "error_info": p.error_info,
                    "duration_seconds": p.duration,
                }
                for _, p in sorted(progress.items())
            ],
        }
    }


class PrefixedPrinter:
    """Writes output as it arrives; with several instances, each line gets its instance id."""

    def __init__(self, prefix: bool | None, palette: Palette = PLAIN) -> None:
        self.prefix = prefix
        self.palette = palette
        self.partial: dict[str, bytes] = {}
        self.out = sys.stdout.buffer

    def write(self, instance_id: str, data: bytes) -> None:
        if not self.prefix:
            self.out.write(data)
            self.out.flush()
            return
        text = self.partial.pop(instance_id, b"") + data
        *lines, rest = text.split(b"\n")
        for line in lines:
            self.out.write(line_prefix(instance_id, self.palette) + line + b"\n")
        if rest:
            self.partial[instance_id] = rest
        self.out.flush()

    def close(self) -> None:
        for instance_id, rest in self.partial.items():
            self.out.write(line_prefix(instance_id, self.palette) + rest + b"\n")
        self.out.flush()


async def _results(
    commands: command_pb2_grpc.CommandServiceAsyncStub, region: str, invoke_id: str
) -> list[pb.InvocationResult]:
    """The invocation's latest records, for their exact start and finish times; none when the
    call fails (the times are a nicety, the run's outcome is known already)."""
    found: list[pb.InvocationResult] = []
    token = ""
    try:
        while True:
            page = await commands.DescribeInvocationResults(
                pb.DescribeInvocationResultsRequest(
                    region_id=region, invoke_id=invoke_id, page_size=RESULTS_PAGE, page_token=token
                )
            )
            found += page.invocation_results
            token = page.next_page_token
            if not token:
                return found
    except aio.AioRpcError:
        return found


async def _tick(view: LiveView) -> None:
    while True:
        await asyncio.sleep(TICK_SECONDS)
        view.redraw()


async def follow(
    commands: command_pb2_grpc.CommandServiceAsyncStub,
    region: str,
    invoke_id: str,
    *,
    mode: Mode,
    prefix: bool | None,
    palette: Palette = PLAIN,
    instance_ids: Sequence[str] = (),
) -> int:
    """Shows the invocation until it ends; returns the exit code (see exit_code_of).

    `prefix`: plain mode prefixes lines with instance ids (None: once a second instance
    writes). `instance_ids`: those known beforehand, shown pending in the live view."""
    stream = watch_events(commands, region, invoke_id)
    if mode == "live":
        return await _follow_live(commands, region, invoke_id, stream, palette, instance_ids)
    progress: dict[str, InstanceProgress] = {}
    if mode == "json":
        async for event in stream:
            render.print_json_line(render.message_dict(event))
            if event.HasField("state_change"):
                apply_change(progress, event.state_change)
        apply_results(progress, await _results(commands, region, invoke_id))
        code = exit_code_of(progress)
        render.print_json_line(summary_json(invoke_id, progress, code))
        return code
    printer = PrefixedPrinter(prefix, palette)
    instances_seen: set[str] = set()
    async for event in stream:
        if event.HasField("output"):
            instances_seen.add(event.output.instance_id)
            if prefix is None:
                printer.prefix = len(instances_seen) > 1
            printer.write(event.output.instance_id, event.output.data)
            continue
        change = event.state_change
        apply_change(progress, change)
        if change.error_code and change.state not in (
            pb.EXECUTION_STATE_FAILED,
            pb.EXECUTION_STATE_SUCCESS,
        ):
            render.error(
                f"{change.instance_id}: "
                f"{render.enum_suffix(pb.ExecutionState.Name(change.state))} "
                f"({change.error_code}) {change.error_info}"
            )
    printer.close()
    return exit_code_of(progress)


async def watch_events(
    commands: command_pb2_grpc.CommandServiceAsyncStub, region: str, invoke_id: str
) -> AsyncIterator[pb.WatchInvocationResponse]:
    """The invocation's events one by one, received in batches (one message for the events of
    each look the server takes; a server that predates batches sends one event per message)."""
    stream = commands.WatchInvocation(
        pb.WatchInvocationRequest(region_id=region, invoke_id=invoke_id, batch=True)
    )
    async for response in stream:
        if response.events:
            for event in response.events:
                yield event
        elif response.WhichOneof("event"):
            yield response


async def _follow_live(
    commands: command_pb2_grpc.CommandServiceAsyncStub,
    region: str,
    invoke_id: str,
    stream: AsyncIterator[pb.WatchInvocationResponse],
    palette: Palette,
    instance_ids: Sequence[str],
) -> int:
    view = LiveView(sys.stdout.buffer, palette, instance_ids)
    view.redraw()
    ticker = asyncio.create_task(_tick(view))
    try:
        async for event in stream:
            if event.HasField("output"):
                view.output(event.output.instance_id, event.output.data)
            else:
                view.state_change(event.state_change)
        results = await _results(commands, region, invoke_id)
    except BaseException:
        view.abort()
        raise
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    view.finish(results)
    return exit_code_of(view.progress)
