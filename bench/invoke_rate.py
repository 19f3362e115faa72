"""Invocation throughput: sustained invocations per second, each to one simulated agent, end
to end (record created, dispatched, result stored), and the latency at that rate.

    .venv/bin/python bench/invoke_rate.py --seconds 60 --concurrency 64 --agents 100

`--concurrency` clients each loop: InvokeCommand on the next agent, then wait until that agent
is told its result is stored (its `ack` with result_stored). The simulated agents speak the
agent protocol the real agent speaks (2: one report per task; `--protocol 1`: the older flow of
three). Prints one JSON line: the rate and latency, the server's CPU, agent-stream messages and
database transactions per invocation, and the floor: the rate a server could reach if each
invocation cost only its gRPC messages at the bare grpc.aio cost measured in the same run.
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

from bench.floors import (
    agent_messages,
    cpu_seconds,
    db_transactions,
    grpc_message_floor_us,
    messages_per_record,
)
from cloudassist.v1 import agent_pb2, agent_pb2_grpc, command_pb2, command_pb2_grpc, instance_pb2
from tests.postgres import database_url
from tests.support import ServerProcess, client_channel

OUTPUT = b"hi\n"


class StoredAgent:
    """A simulated agent that reports when the server has stored each task's result."""

    def __init__(self, channel: aio.Channel, instance_id: str, secret: str, protocol: int) -> None:
        self.protocol = protocol
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
                    protocol_version=self.protocol,
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
            if kind == "orders":
                for task in message.orders.dispatches:
                    self.invoke_of[task.task_id] = task.invoke_id
                if message.orders.dispatches:
                    await call.write(self._reports(message.orders.dispatches))
                for ack in message.orders.acks:
                    self._stored(ack)
            elif kind == "dispatch":
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
            elif kind == "ack":
                self._stored(message.ack)

    @staticmethod
    def _reports(dispatches: list[agent_pb2.Dispatch]) -> agent_pb2.ConnectRequest:
        """What the real agent sends for a quick task: acceptance, output and result at once."""
        reports = agent_pb2.Reports()
        for task in dispatches:
            report = reports.tasks.add(task_id=task.task_id, offset=0, data=OUTPUT)
            report.accepted_time.GetCurrentTime()
            report.finished.exit_code = 0
            report.finished.output_size = len(OUTPUT)
        return agent_pb2.ConnectRequest(reports=reports)

    def _stored(self, ack: agent_pb2.Ack) -> None:
        if not ack.result_stored:
            return
        invoke_id = self.invoke_of.pop(ack.task_id, "")
        future = self.stored.pop(invoke_id, None)
        if future is None:
            self.early[invoke_id] = time.perf_counter()
        elif not future.done():
            future.set_result(time.perf_counter())


def _cpu(servers: list[ServerProcess]) -> float:
    return sum(cpu_seconds(s.pid) for s in servers)


def _summed(counts: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _messages(servers: list[ServerProcess]) -> dict[str, float]:
    return _summed([agent_messages(s.metrics_port) for s in servers])


def _transactions(servers: list[ServerProcess]) -> dict[str, float]:
    return _summed([db_transactions(s.metrics_port) for s in servers])


async def run(args: argparse.Namespace, servers: list[ServerProcess]) -> dict[str, object]:
    server = servers[0]
    # Agent n is connected to server n % len(servers); a client calls the server of the
    # agents it invokes, so every invocation stays on one server (as behind a load balancer
    # that keeps a fleet's agents and its callers together).
    channels = [aio.insecure_channel(servers[n % len(servers)].agent_address) for n in range(8)]
    callers = [client_channel(s, server.admin_key) for s in servers]
    async with client_channel(server) as admin_channel:
        credentials = await register_all(channels[0], admin_channel, args.agents, "i-rate-")
        agents = [
            StoredAgent(channels[n % len(channels)], iid, secret, args.protocol)
            for n, (iid, secret) in enumerate(credentials)
        ]
        by_server: list[list[StoredAgent]] = [[] for _ in servers]
        for n, agent in enumerate(agents):
            by_server[(n % len(channels)) % len(servers)].append(agent)
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

        measured_from: dict[str, object] = {}

        async def client(number: int) -> None:
            mine = by_server[number % len(servers)]
            caller = command_pb2_grpc.CommandServiceStub(callers[number % len(servers)])
            while time.perf_counter() < deadline:
                if not measured_from and time.perf_counter() >= warmup_until:
                    measured_from.update(
                        cpu=_cpu(servers),
                        messages=_messages(servers),
                        transactions=_transactions(servers),
                    )
                agent = mine[next(counter) % len(mine)]
                start = time.perf_counter()
                invoked = await caller.InvokeCommand(
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
        await asyncio.gather(*(client(n) for n in range(args.concurrency)))
        measured = time.perf_counter() - max(began, warmup_until - args.warmup) - args.warmup
        server_cpu = _cpu(servers) - float(measured_from["cpu"])  # type: ignore[arg-type]
        messages, by_kind = messages_per_record(
            measured_from["messages"],  # type: ignore[arg-type]
            _messages(servers),
            len(latencies),
        )
        transactions_before: dict[str, float] = measured_from["transactions"]  # type: ignore[assignment]
        transactions = {
            kind: round((count - transactions_before.get(kind, 0.0)) / len(latencies), 2)
            for kind, count in _transactions(servers).items()
        }
        for task in tasks:
            task.cancel()
    for channel in [*channels, *callers]:
        await channel.close()
    ms = sorted(x * 1000 for x in latencies)
    floor_cpu_us, _ = await asyncio.to_thread(grpc_message_floor_us)
    # The client's request and response, and the agent stream's messages.
    floor_per_second = 1e6 / ((2 + messages) * floor_cpu_us)
    per_second = len(ms) / measured
    return {
        "benchmark": "invocation-throughput",
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "agents": args.agents,
        "servers": len(servers),
        "database": "postgresql" if server.db_url else "sqlite",
        "invocations": len(ms),
        "protocol": args.protocol,
        "per_second": round(per_second, 1),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1),
        "server_cpu_ms_per_invocation": round(server_cpu / len(ms) * 1000, 2),
        "messages_per_invocation": messages,
        "messages_by_kind": by_kind,
        "db_transactions_per_invocation": transactions,
        "floor_grpc_cpu_us_per_message": round(floor_cpu_us, 1),
        "floor_per_second": round(floor_per_second, 1),
        "per_second_over_floor": round(per_second / floor_per_second, 2),
        "machine": f"{platform.machine()} Python {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--protocol", type=int, choices=(1, 2), default=2)
    parser.add_argument(
        "--servers", type=int, default=1,
        help="server processes on one database (more than one: on a PostgreSQL the bench starts)",
    )  # fmt: skip
    parser.add_argument(
        "--postgres", action="store_true", help="PostgreSQL even for one server (needs initdb)"
    )
    args = parser.parse_args()
    args.seconds += args.warmup
    servers: list[ServerProcess] = []
    with (
        database_url(args.servers > 1 or args.postgres) as db_url,
        tempfile.TemporaryDirectory(prefix="cloudassist-rate-") as tmp,
    ):
        for n in range(args.servers):
            server = ServerProcess(
                Path(tmp) / f"server-{n}", "--rate-limit", "0",
                "--max-invocations-per-day", "100000000", "--log-level", "WARNING",
                "--metrics-listen", "127.0.0.1:0", db_url=db_url,
            )  # fmt: skip
            servers.append(server)
            server.start()
        try:
            result = asyncio.run(run(args, servers))
        finally:
            for server in servers:
                server.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
