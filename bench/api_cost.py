"""The API path's own cost: server CPU and wall time per call, one client calling in a loop.

    .venv/bin/python bench/api_cost.py --calls 2000

Starts a server (SQLite, `--rate-limit 0`) and one simulated agent, then for each call in turn
calls it `--calls` times in a loop from one client and reads the server's CPU from /proc:
`grpc.health.v1.Health/Check` (the floor of a unary call), `DescribeInvocations` (one id),
`DescribeCommands`, `DescribeInvocationResults` (one record) and `InvokeCommand` on the one
instance, where each call also waits until the agent is told its result is stored, so the
record's dispatch and report are in the figure. The floor is measured again right before each
call, and each JSON line gives the call beside it. `--only CALL --seconds N` loops one call
for N seconds (after printing the server's pid on stderr) for a profiler to attach.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from invoke_rate import StoredAgent
from swarm import REGION, register_all

from bench.floors import cpu_seconds
from cloudassist.v1 import command_pb2, command_pb2_grpc
from tests.support import ServerProcess, client_channel

CALLS = (
    "DescribeInvocations",
    "DescribeCommands",
    "DescribeInvocationResults",
    "InvokeCommand",
)


async def _loop(pid: int, call: Callable[[], Awaitable[object]], count: int) -> tuple[float, float]:
    """Server CPU and wall time per call, in ms, over `count` calls after a warm-up."""
    for _ in range(min(50, count)):
        await call()
    cpu = cpu_seconds(pid)
    wall = time.perf_counter()
    for _ in range(count):
        await call()
    wall = time.perf_counter() - wall
    cpu = cpu_seconds(pid) - cpu
    return cpu / count * 1000, wall / count * 1000


async def run(args: argparse.Namespace, server: ServerProcess) -> None:
    async with (
        client_channel(server) as channel,
        aio.insecure_channel(server.agent_address) as agent_channel,
    ):
        ((instance_id, secret),) = await register_all(agent_channel, channel, 1, "i-cost-")
        agent = StoredAgent(agent_channel, instance_id, secret, 2)
        agent_task = asyncio.create_task(agent.run())
        await agent.ready.wait()
        stub = command_pb2_grpc.CommandServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        created = await stub.CreateCommand(
            command_pb2.CreateCommandRequest(
                region_id=REGION, name="cost", type=command_pb2.COMMAND_TYPE_RUN_SHELL_SCRIPT,
                command_content=b"echo hi",
            )
        )  # fmt: skip

        async def invoke() -> str:
            invoked = await stub.InvokeCommand(
                command_pb2.InvokeCommandRequest(
                    region_id=REGION, command_id=created.command_id, instance_ids=[instance_id]
                )
            )
            await asyncio.wait_for(agent.expect(invoked.invoke_id), 30)
            return str(invoked.invoke_id)

        invoke_id = await invoke()
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "Health/Check": lambda: health.Check(health_pb2.HealthCheckRequest()),
            "DescribeInvocations": lambda: stub.DescribeInvocations(
                command_pb2.DescribeInvocationsRequest(region_id=REGION, invoke_id=invoke_id)
            ),
            "DescribeCommands": lambda: stub.DescribeCommands(
                command_pb2.DescribeCommandsRequest(region_id=REGION)
            ),
            "DescribeInvocationResults": lambda: stub.DescribeInvocationResults(
                command_pb2.DescribeInvocationResultsRequest(region_id=REGION, invoke_id=invoke_id)
            ),
            "InvokeCommand": invoke,
        }
        if args.only:
            print(f"server pid {server.pid}", file=sys.stderr, flush=True)
            call = calls[args.only]
            deadline = time.perf_counter() + args.seconds
            count = 0
            while time.perf_counter() < deadline:
                await call()
                count += 1
            print(json.dumps({"call": args.only, "calls": count}), flush=True)
        else:
            for name in CALLS:
                floor_cpu, floor_wall = await _loop(server.pid, calls["Health/Check"], args.calls)
                cpu, wall = await _loop(server.pid, calls[name], args.calls)
                line = {
                    "benchmark": "api-cost",
                    "call": name,
                    "calls": args.calls,
                    "server_cpu_ms": round(cpu, 3),
                    "wall_ms": round(wall, 3),
                    "floor_health_check_cpu_ms": round(floor_cpu, 3),
                    "floor_health_check_wall_ms": round(floor_wall, 3),
                    "over_floor": round(cpu / floor_cpu, 2) if floor_cpu else None,
                }
                print(json.dumps(line), flush=True)
        agent_task.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls of each kind")
    parser.add_argument("--only", choices=("Health/Check", *CALLS), help="loop this call only")
    parser.add_argument("--seconds", type=float, default=30, help="with --only: how long")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloudassist-cost-") as tmp:
        server = ServerProcess(
            Path(tmp) / "server", "--rate-limit", "0", "--max-invocations-per-day", "100000000",
            "--log-level", "WARNING",
        )  # fmt: skip
        server.start()
        try:
            asyncio.run(run(args, server))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
