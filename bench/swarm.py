"""A swarm of simulated agents speaking the real protocol, from one process.

Each simulated agent registers (AgentService.Register), holds one AgentService.Connect stream
(many streams share each of `--channels` HTTP/2 connections), heartbeats like the real agent,
and answers every dispatch at once with acceptance, one line of output and its exit code (0)
in one report, as the real agent does for a quick task (agent protocol 2; `--protocol 1`: the
older flow of three messages).
It reconnects as the real agent does: with exponential backoff and full jitter, within a
second after a stream the server ended, and after the time the server gave (with jitter) when
the server refused its hello for now (RESOURCE_EXHAUSTED with google.rpc.RetryInfo).

    .venv/bin/python bench/swarm.py --agents 10000 --invocations 200 --per-invocation 50

starts a server (SQLite in a temp dir), connects the swarm, measures the time until every
agent is connected, the server's RSS and its idle CPU, then runs the invocations and measures
the time until every record is terminal, then restarts the server and measures the time until
every agent is connected again. Prints one JSON line; `reconnect_reasons` counts the failed
attempts by phase (`connect`: the first connection; `stopping`: while the server drains and
exits; `down`: until it is back; `back`: against the restarted server) and by status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.floors import agent_messages
from cloudassist.agent.connection import RETRY_JITTER, retry_after
from cloudassist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    command_pb2,
    command_pb2_grpc,
    instance_pb2,
)
from tests.postgres import database_url
from tests.support import ServerProcess, client_channel

REGION = "cn-hangzhou"
OUTPUT = b"hi\n"


@dataclass
class SwarmStats:
    connected: int = 0
    welcomes: int = 0
    tasks: int = 0
    reconnects: int = 0
    # Hellos the server refused for now, with a time to come back.
    told_to_wait: int = 0
    phase: str = "connect"
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    connected_event: asyncio.Event = field(default_factory=asyncio.Event)


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return cpu, rss


class SimulatedAgent:
    def __init__(
        self,
        channel: aio.Channel,
        instance_id: str,
        secret: str,
        stats: SwarmStats,
        total: int,
        protocol: int = 2,
    ) -> None:
        self.protocol = protocol
        self.stub = agent_pb2_grpc.AgentServiceStub(channel)
        self.instance_id = instance_id
        self.secret = secret
        self.stats = stats
        self.total = total
        # grpc.aio allows one write at a time on a call (the real agent has one writer task).
        self.write_lock = asyncio.Lock()
        # Where the current attempt is: writing its hello, waiting for the welcome, or on.
        self.stage = "hello"

    async def run(self) -> None:
        attempt = 0
        while True:
            wait: float | None = None
            try:
                await self._session()
                attempt = 0
                delay = random.uniform(0, 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.reconnects += 1
                wait = retry_after(exc)
                if wait is not None:
                    self.stats.told_to_wait += 1
                reason = (
                    f"{exc.code().name}: {exc.details()}"[:60]
                    if isinstance(exc, grpc.RpcError)
                    else type(exc).__name__
                )
                if self.stage != "stream":  # where the attempt failed, when before the stream
                    reason += f" (at {self.stage})"
                if wait is not None:
                    reason = "RESOURCE_EXHAUSTED with RetryInfo"
                phase = self.stats.reasons.setdefault(self.stats.phase, {})
                phase[reason] = phase.get(reason, 0) + 1
                delay = random.uniform(0, min(30.0, 0.5 * 2**attempt))
                attempt = min(attempt + 1, 30)
            if wait is not None:
                delay = wait * random.uniform(1, 1 + RETRY_JITTER)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        call = self.stub.Connect()
        self.stage = "hello"
        await call.write(
            agent_pb2.ConnectRequest(
                hello=agent_pb2.Hello(
                    instance_id=self.instance_id,
                    instance_secret=self.secret,
                    os_type=instance_pb2.OS_TYPE_LINUX,
                    agent_version="swarm",
                    protocol_version=self.protocol,
                )
            )
        )
        self.stage = "welcome"
        first = await call.read()
        self.stage = "stream"
        if not isinstance(first, agent_pb2.ConnectResponse) or not first.HasField("welcome"):
            raise ConnectionError("no welcome")
        self.stats.welcomes += 1
        self.stats.connected += 1
        if self.stats.connected >= self.total:
            self.stats.connected_event.set()
        heartbeat = asyncio.create_task(
            self._heartbeats(call, first.welcome.heartbeat_interval_seconds)
        )
        try:
            while True:
                message = await call.read()
                if not isinstance(message, agent_pb2.ConnectResponse):
                    return
                kind = message.WhichOneof("message")
                if kind == "orders" and message.orders.dispatches:
                    await self._report(call, [d.task_id for d in message.orders.dispatches])
                elif kind == "dispatch":
                    await self._answer(call, message.dispatch.task_id)
                elif kind == "reconnect":
                    return
        finally:
            self.stats.connected -= 1
            heartbeat.cancel()
            call.cancel()

    async def _report(self, call: aio.StreamStreamCall, task_ids: list[str]) -> None:  # type: ignore[type-arg]
        self.stats.tasks += len(task_ids)
        reports = agent_pb2.Reports()
        for task_id in task_ids:
            report = reports.tasks.add(task_id=task_id, offset=0, data=OUTPUT)
            report.accepted_time.GetCurrentTime()
            report.finished.exit_code = 0
            report.finished.output_size = len(OUTPUT)
        async with self.write_lock:
            await call.write(agent_pb2.ConnectRequest(reports=reports))

    async def _answer(self, call: aio.StreamStreamCall, task_id: str) -> None:  # type: ignore[type-arg]
        self.stats.tasks += 1
        finished = agent_pb2.TaskFinished(task_id=task_id, exit_code=0, output_size=len(OUTPUT))
        async with self.write_lock:
            await call.write(
                agent_pb2.ConnectRequest(task_accepted=agent_pb2.TaskAccepted(task_id=task_id))
            )
            await call.write(
                agent_pb2.ConnectRequest(
                    output=agent_pb2.TaskOutput(task_id=task_id, offset=0, data=OUTPUT)
                )
            )
            await call.write(agent_pb2.ConnectRequest(task_finished=finished))

    async def _heartbeats(self, call: aio.StreamStreamCall, interval: int) -> None:  # type: ignore[type-arg]
        # Spread the fleet's heartbeats over the interval, as real agents started at
        # different times would be.
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            async with self.write_lock:
                await call.write(agent_pb2.ConnectRequest(heartbeat=agent_pb2.Heartbeat()))
            await asyncio.sleep(interval)


async def register_all(
    channel: aio.Channel, admin_channel: aio.Channel, count: int, prefix: str
) -> list[tuple[str, str]]:
    admin = admin_pb2_grpc.AdminServiceStub(admin_channel)
    activation = await admin.CreateActivation(
        admin_pb2.CreateActivationRequest(region_id=REGION, max_registrations=min(count, 1000))
    )
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    credentials: list[tuple[str, str]] = []
    batch = 200
    for start in range(0, count, batch):
        if start and start % 1000 == 0:
            activation = await admin.CreateActivation(
                admin_pb2.CreateActivationRequest(region_id=REGION, max_registrations=1000)
            )
        responses = await asyncio.gather(
            *(
                stub.Register(
                    agent_pb2.RegisterRequest(
                        activation_id=activation.activation.activation_id,
                        activation_code=activation.activation_code,
                        instance_id=f"{prefix}{n:05d}",
                        os_type=instance_pb2.OS_TYPE_LINUX,
                    )
                )
                for n in range(start, min(start + batch, count))
            )
        )
        credentials += [(r.instance_id, r.instance_secret) for r in responses]
    return credentials


async def run_invocations(
    stub: command_pb2_grpc.CommandServiceStub,
    ids: list[str],
    invocations: int,
    per: int,
    follow: str,
) -> float:
    """Seconds from the first RunCommand until every record is terminal, found by following
    each invocation with WatchInvocation (`follow="watch"`: the server also streams every state
    and output to the client) or by polling DescribeInvocations (`"poll"`)."""
    start = time.perf_counter()

    async def one(n: int) -> None:
        targets = [ids[(n * per + k) % len(ids)] for k in range(per)]
        ran = await stub.RunCommand(
            command_pb2.RunCommandRequest(
                region_id=REGION,
                type=command_pb2.COMMAND_TYPE_RUN_SHELL_SCRIPT,
                command_content=b"echo hi",
                instance_ids=targets,
            )
        )
        if follow == "watch":
            async for _ in stub.WatchInvocation(
                command_pb2.WatchInvocationRequest(
                    region_id=REGION, invoke_id=ran.invoke_id, batch=True
                )
            ):
                pass
            return
        while True:
            described = await stub.DescribeInvocations(
                command_pb2.DescribeInvocationsRequest(region_id=REGION, invoke_id=ran.invoke_id)
            )
            if described.invocations[0].invoke_status != command_pb2.INVOKE_STATUS_RUNNING:
                return
            await asyncio.sleep(0.5)

    await asyncio.gather(*(one(n) for n in range(invocations)))
    return time.perf_counter() - start


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    with (
        database_url(args.postgres) as db_url,
        tempfile.TemporaryDirectory(prefix="cloudassist-swarm-") as tmp,
    ):
        server = ServerProcess(
            Path(tmp) / "server",
            "--max-instances-per-invocation", "50",
            "--max-invocations-per-day", "1000000",
            "--rate-limit", "0",
            "--log-level", "WARNING",
            "--heartbeat-interval", str(args.heartbeat_interval),
            "--metrics-listen", "127.0.0.1:0",
            *args.server_flag,
            db_url=db_url,
        )  # fmt: skip
        server.start()
        try:
            result = await swarm_against(server, args)
        finally:
            server.stop()
    result["database"] = "postgresql" if db_url else "sqlite"
    return result


async def swarm_against(server: ServerProcess, args: argparse.Namespace) -> dict[str, object]:
    options = [("grpc.max_receive_message_length", 8 * 1024 * 1024)]
    channels = [
        aio.insecure_channel(server.agent_address, options=[*options, ("grpc.channel_id", n)])
        for n in range(args.channels)
    ]
    async with client_channel(server) as admin_channel:
        registered_at = time.perf_counter()
        credentials = await register_all(channels[0], admin_channel, args.agents, "i-swarm-")
        registration_s = time.perf_counter() - registered_at

        stats = SwarmStats()
        cpu_at_start, _ = proc_stats(server.pid)
        started = time.perf_counter()
        agents = [
            SimulatedAgent(
                channels[n % len(channels)], iid, secret, stats, args.agents, args.protocol
            )
            for n, (iid, secret) in enumerate(credentials)
        ]
        tasks = [asyncio.create_task(a.run()) for a in agents]
        await asyncio.wait_for(stats.connected_event.wait(), args.connect_timeout)
        connect_s = time.perf_counter() - started
        # For a profiler to attach in the idle window (5 s from now, `--idle` seconds long).
        print(f"all connected; server pid {server.pid}", file=sys.stderr, flush=True)
        connect_cpu = proc_stats(server.pid)[0] - cpu_at_start

        await asyncio.sleep(5)  # let the connection burst settle
        cpu_before, _ = proc_stats(server.pid)
        await asyncio.sleep(args.idle)
        cpu_after, rss = proc_stats(server.pid)
        idle_cpu = (cpu_after - cpu_before) / args.idle

        stub = command_pb2_grpc.CommandServiceStub(admin_channel)
        run_s = await run_invocations(
            stub, [c[0] for c in credentials], args.invocations, args.per_invocation, args.follow
        )
        cpu_after_run, rss_after_run = proc_stats(server.pid)
        records = max(1, args.invocations * args.per_invocation)
        run_cpu_ms_per_record = (cpu_after_run - cpu_after) / records * 1000

        # A restart: the server drains (agents are told to reconnect), comes back on the same
        # port, and the fleet finds it again through its jittered backoff.
        stats.connected_event.clear()
        stats.phase = "stopping"
        await asyncio.to_thread(server.stop)
        stats.phase = "down"
        restarted_at = time.perf_counter()
        await asyncio.to_thread(server.start)
        stats.phase = "back"
        await asyncio.wait_for(stats.connected_event.wait(), args.connect_timeout)
        reconnect_s = time.perf_counter() - restarted_at
        reconnect_cpu, rss_reconnected = proc_stats(server.pid)
        # What the restarted server says it refused, beside what the agents read.
        refused_back = agent_messages(server.metrics_port).get(("in", "hello_refused"), 0)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                await task
    for channel in channels:
        await channel.close()
    return {
        "benchmark": "swarm",
        "agents": args.agents,
        "channels": args.channels,
        "registration_s": round(registration_s, 1),
        "connect_all_s": round(connect_s, 1),
        "connect_server_cpu_s": round(connect_cpu, 1),
        "server_rss_mib": round(rss / 2**20, 1),
        "server_rss_after_run_mib": round(rss_after_run / 2**20, 1),
        "idle_cpu_percent_of_core": round(idle_cpu * 100, 1),
        "heartbeat_interval_s": args.heartbeat_interval,
        "protocol": args.protocol,
        "records": args.invocations * args.per_invocation,
        "run_all_terminal_s": round(run_s, 2),
        "run_server_cpu_ms_per_record": round(run_cpu_ms_per_record, 2),
        "followed_by": args.follow,
        "reconnect_all_after_restart_s": round(reconnect_s, 1),
        # The restarted server's CPU from its start until every agent is back.
        "reconnect_server_cpu_s": round(reconnect_cpu, 1),
        "tasks_answered": stats.tasks,
        "server_rss_after_reconnect_mib": round(rss_reconnected / 2**20, 1),
        "reconnects": stats.reconnects,
        "told_to_wait": stats.told_to_wait,
        "hellos_refused_by_the_restarted_server": int(refused_back),
        "reconnect_reasons": stats.reasons,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=100, help="HTTP/2 connections")
    parser.add_argument("--invocations", type=int, default=20)
    parser.add_argument("--per-invocation", type=int, default=50)
    parser.add_argument(
        "--follow",
        choices=["poll", "watch"],
        default="watch",
        help="how the client learns that an invocation is over [%(default)s]",
    )
    parser.add_argument(
        "--heartbeat-interval", type=int, default=20, help="the server's flag [%(default)s]"
    )
    parser.add_argument("--protocol", type=int, choices=(1, 2), default=2)
    parser.add_argument(
        "--postgres", action="store_true", help="a PostgreSQL the bench starts (needs initdb)"
    )
    parser.add_argument(
        "--server-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="a flag for the server, e.g. --server-flag=--max-agent-connects-per-second=300",
    )
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU sampling")
    parser.add_argument("--connect-timeout", type=float, default=300.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))), flush=True)


if __name__ == "__main__":
    main()
