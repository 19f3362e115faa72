"""Invocation throughput: sustained invocations per second, each to one simulated agent, end
to end (record created, dispatched, result stored), and the latency at that rate.

    .venv/bin/python bench/invoke_rate.py --seconds 60 --concurrency 64 --agents 100

`--concurrency` clients each loop: RunCommand on the next agent, then wait until that agent
is told its result is stored (its `ack` with result_stored). Prints one JSON line.
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

from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from swarm import REGION, register_all

from cloudassist.v1 import agent_pb2, agent_pb2_grpc, command_pb2, command_pb2_grpc, instance_pb2
from tests.support import ServerProcess, client_channel

OUTPUT = b"hi\n"


class StoredAgent:
    """A simulated agent that reports when the server has stored each task's result."""

    def __init__(self, channel: aio.Channel, instance_id: str, secret: str) -> None:
        self.stub = agent_pb2_grpc.AgentServiceStub(channel)
        self.instance_id = instance_id
        self.secret = secret
        self.invoke_of: dict[str, str] = {}
        self.stored: dict[str, asyncio.Future[float]] = {}
        # Results stored before the client asked for them (the ack can beat the reply to
        # InvokeCommand).
        self.early: dict[str, float] = {}
        self.ready = asyncio.Event()

    def expect(self, invoke_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if invoke_id in self.early:
            future.set_result(self.early.pop(invoke_id))
        else:
            self.stored[invoke_id] = future
        return future

    async def run(self) -> None:
        call = self.stub.Connect()
        await call.write(
            agent_pb2.ConnectRequest(
                hello=agent_pb2.Hello(
                    instance_id=self.instance_id,
                    instance_secret=self.secret,
                    os_type=instance_pb2.OS_TYPE_LINUX,
                )
            )
        )
        await call.read()
        self.ready.set()
        while True:
            message = await call.read()
            if not isinstance(message, agent_pb2.ConnectResponse):
                return
            kind = message.WhichOneof("message")
            if kind == "dispatch":
                task = message.dispatch
                self.invoke_of[task.task_id] = task.invoke_id
                for request in (
                    agent_pb2.ConnectRequest(
                        task_accepted=agent_pb2.TaskAccepted(task_id=task.task_id)
                    ),
                    agent_pb2.ConnectRequest(
                        output=agent_pb2.TaskOutput(task_id=task.task_id, offset=0, data=OUTPUT)
                    ),
                    agent_pb2.ConnectRequest(
                        task_finished=agent_pb2.TaskFinished(
                            task_id=task.task_id, exit_code=0, output_size=len(OUTPUT)
                        )
                    ),
                ):
                    await call.write(request)
            elif kind == "ack" and message.ack.result_stored:
                invoke_id = self.invoke_of.pop(message.ack.task_id, "")
                future = self.stored.pop(invoke_id, None)
                if future is None:
                    self.early[invoke_id] = time.perf_counter()
                elif not future.done():
                    future.set_result(time.perf_counter())


async def run(args: argparse.Namespace, server: ServerProcess) -> dict[str, object]:
    channels = [aio.insecure_channel(server.agent_address) for _ in range(8)]
    async with client_channel(server) as admin_channel:
        credentials = await register_all(channels[0], admin_channel, args.agents, "i-rate-")
        agents = [
            StoredAgent(channels[n % len(channels)], iid, secret)
            for n, (iid, secret) in enumerate(credentials)
        ]
        tasks = [asyncio.create_task(a.run()) for a in agents]
        await asyncio.gather(*(a.ready.wait() for a in agents))
        stub = command_pb2_grpc.CommandServiceStub(admin_channel)
        created = await stub.CreateCommand(
            command_pb2.CreateCommandRequest(
                region_id=REGION, name="rate", type=command_pb2.COMMAND_TYPE_RUN_SHELL_SCRIPT,
                command_content=b"echo hi",
            )
        )  # fmt: skip
        latencies: list[float] = []
        counter = iter(range(10**9))
        deadline = time.perf_counter() + args.seconds
        warmup_until = time.perf_counter() + args.warmup

        async def client() -> None:
            while time.perf_counter() < deadline:
                agent = agents[next(counter) % len(agents)]
                start = time.perf_counter()
                invoked = await stub.InvokeCommand(
                    command_pb2.InvokeCommandRequest(
                        region_id=REGION,
                        command_id=created.command_id,
                        instance_ids=[agent.instance_id],
                    )
                )
                done = await asyncio.wait_for(agent.expect(invoked.invoke_id), 30)
                if start >= warmup_until:
                    latencies.append(done - start)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        measured = time.perf_counter() - max(began, warmup_until - args.warmup) - args.warmup
        for task in tasks:
            task.cancel()
    for channel in channels:
        await channel.close()
    ms = sorted(x * 1000 for x in latencies)
    return {
        "benchmark": "invocation-throughput",
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "agents": args.agents,
        "invocations": len(ms),
        "per_second": round(len(ms) / measured, 1),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1),
        "machine": f"{platform.machine()} Python {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--agents", type=int, default=100)
    args = parser.parse_args()
    args.seconds += args.warmup
    with tempfile.TemporaryDirectory(prefix="cloudassist-rate-") as tmp:
        server = ServerProcess(
            Path(tmp) / "server", "--rate-limit", "0", "--max-invocations-per-day", "100000000",
            "--log-level", "WARNING",
        )  # fmt: skip
        server.start()
        try:
            result = asyncio.run(run(args, server))
        finally:
            server.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
