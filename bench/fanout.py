"""Fan-out latency: InvokeCommand -> every record terminal, `echo hi`, on N real agent processes.

Starts a server (SQLite in a temp dir) and the agents, runs the invocation `--runs` times per
agent count, and prints one JSON line of figures per count: the latency, the CPU the server
and the agents spent per record (from /proc; the agents' own, `/bin/sh` excluded), the
messages on the agent streams per record (from the server's counters), and beside them the
floor: the spawn of N concurrent `sh -c 'echo hi'` on the same machine, in the same run.
Usage:

    .venv/bin/python bench/fanout.py --agents 1,10,50 --runs 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.floors import (
    agent_messages,
    cpu_seconds,
    messages_per_record,
    percentile,
    spawn_floor_ms,
)
from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.support import AgentProcess, ServerProcess, client_channel

REGION = "cn-hangzhou"


async def one_run(
    stub: command_pb2_grpc.CommandServiceStub, command_id: str, ids: list[str]
) -> float:
    start = time.perf_counter()
    invoked = await stub.InvokeCommand(
        pb.InvokeCommandRequest(region_id=REGION, command_id=command_id, instance_ids=ids)
    )
    states: dict[str, int] = {}
    async for response in stub.WatchInvocation(
        pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoked.invoke_id, batch=True)
    ):
        for event in response.events:
            if event.HasField("state_change"):
                states[event.state_change.instance_id] = event.state_change.state
    elapsed = time.perf_counter() - start
    if set(states.values()) != {pb.EXECUTION_STATE_SUCCESS} or len(states) != len(ids):
        raise RuntimeError(f"run {invoked.invoke_id} did not succeed everywhere: {states}")
    return elapsed


async def measure(
    server: ServerProcess, agents: list[AgentProcess], runs: int
) -> tuple[list[float], dict[str, object]]:
    ids = [a.instance_id for a in agents]
    async with client_channel(server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        created = await stub.CreateCommand(
            pb.CreateCommandRequest(
                region_id=REGION,
                name=f"fanout-{len(ids)}",
                type=pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
                command_content=b"echo hi",
            )
        )
        await one_run(stub, created.command_id, ids)  # warm-up
        counters = agent_messages(server.metrics_port)
        server_cpu = cpu_seconds(server.pid)
        agents_cpu = sum(cpu_seconds(a.pid) for a in agents)
        times = [await one_run(stub, created.command_id, ids) for _ in range(runs)]
        records = runs * len(ids)
        server_cpu = cpu_seconds(server.pid) - server_cpu
        agents_cpu = sum(cpu_seconds(a.pid) for a in agents) - agents_cpu
        per_record, by_kind = messages_per_record(
            counters, agent_messages(server.metrics_port), records
        )
        return times, {
            "server_cpu_ms_per_record": round(server_cpu * 1000 / records, 3),
            "agent_cpu_ms_per_task": round(agents_cpu * 1000 / records, 3),
            "messages_per_record": per_record,
            "messages_by_kind": by_kind,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1,10,50", help="comma-separated agent counts")
    parser.add_argument("--runs", type=int, default=50, help="invocations per agent count")
    args = parser.parse_args()
    counts = [int(n) for n in args.agents.split(",")]
    with tempfile.TemporaryDirectory(prefix="cloudassist-bench-") as tmp:
        workdir = Path(tmp)
        server = ServerProcess(
            workdir / "server",
            "--max-instances-per-invocation",
            "1000",
            "--max-invocations-per-day",
            "1000000",
            "--metrics-listen",
            "127.0.0.1:0",
        )
        server.start()
        agents: list[AgentProcess] = []
        try:
            for count in counts:
                while len(agents) < count:
                    agent = AgentProcess(server, f"i-bench-{len(agents):03d}", workdir)
                    agent.start()
                    agents.append(agent)
                times, costs = asyncio.run(measure(server, agents[:count], args.runs))
                ms = [t * 1000 for t in times]
                floor = spawn_floor_ms(count)
                print(
                    json.dumps(
                        {
                            "benchmark": "fanout",
                            "agents": count,
                            "runs": len(ms),
                            "p50_ms": round(percentile(ms, 0.50), 1),
                            "p95_ms": round(percentile(ms, 0.95), 1),
                            "p99_ms": round(percentile(ms, 0.99), 1),
                            "mean_ms": round(statistics.fmean(ms), 1),
                            "max_ms": round(max(ms), 1),
                            **costs,
                            "floor_spawn_p50_ms": round(floor, 1),
                            "p50_over_floor": round(percentile(ms, 0.50) / floor, 1),
                            "machine": f"{platform.machine()} {platform.python_version()}",
                        }
                    ),
                    flush=True,
                )
        finally:
            for agent in agents:
                agent.stop()
            server.stop()


if __name__ == "__main__":
    main()
