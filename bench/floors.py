"""What the machine itself costs, measured in the same run as a benchmark, so a figure can be
printed beside its floor: process CPU from /proc, the spawn of N concurrent `sh -c 'echo hi'`,
a bare grpc.aio ping-pong, a raw SQLite insert, and a scrape of the server's agent-stream
message counters."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads, not its children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def spawn_floor_ms(count: int, runs: int = 20) -> float:
    """p50 wall time to start `count` concurrent `sh -c 'echo hi'` and read all their output."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        procs = [
            subprocess.Popen(["sh", "-c", "echo hi"], stdout=subprocess.PIPE) for _ in range(count)
        ]
        for proc in procs:
            assert proc.stdout is not None
            proc.stdout.read()
            proc.wait()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


_ECHO = "/bench.Echo/Echo"


async def _pingpong(round_trips: int) -> tuple[float, float]:
    async def echo(requests: object, context: aio.ServicerContext[bytes, bytes]) -> None:
        while (message := await context.read()) is not aio.EOF:
            await context.write(message)

    server = aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_stream(_ECHO)()
            payload = b"x" * 64
            for _ in range(200):  # warm-up
                await call.write(payload)
                await call.read()
            cpu = time.process_time()
            wall = time.perf_counter()
            for _ in range(round_trips):
                await call.write(payload)
                await call.read()
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
            await call.done_writing()
            # Each round trip is two messages, each written on one side and read on the other.
            return cpu / (2 * round_trips) * 1e6, wall / round_trips * 1e6
    finally:
        await server.stop(None)


def grpc_message_floor_us(round_trips: int = 3000) -> tuple[float, float]:
    """(CPU µs per message, both ends; wall µs per round trip) of a bare grpc.aio bidi stream
    in one process on loopback."""
    return asyncio.run(_pingpong(round_trips))


def sqlite_insert_floor_mb_s(total_bytes: int, chunk: int = 256 * 1024) -> float:
    """MB/s of raw inserts of `chunk`-sized blobs into a WAL-mode SQLite file, committed every
    4 MiB (what the server's output writer does with the same bytes, without the server)."""
    data = os.urandom(chunk)
    with tempfile.TemporaryDirectory(prefix="cloudassist-floor-") as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE chunks (id INTEGER PRIMARY KEY, data BLOB)")
        start = time.perf_counter()
        written = 0
        while written < total_bytes:
            db.executemany(
                "INSERT INTO chunks (data) VALUES (?)", [(data,)] * (4 * 1024 * 1024 // chunk)
            )
            db.commit()
            written += 4 * 1024 * 1024
        elapsed = time.perf_counter() - start
        db.close()
    return written / elapsed / 1e6


def _metrics_text(metrics_port: int) -> str:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def db_transactions(metrics_port: int) -> dict[str, float]:
    """The server's `cloudassist_db_transactions_total` counters, by kind (write, read)."""
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(_metrics_text(metrics_port))
        if family.name == "cloudassist_db_transactions"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def agent_messages(metrics_port: int) -> dict[tuple[str, str], float]:
    """The server's `cloudassist_agent_messages_total` counters, by (direction, kind)."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(_metrics_text(metrics_port)):
        if family.name != "cloudassist_agent_messages":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[(sample.labels["direction"], sample.labels["kind"])] = sample.value
    return counts


# Per connection or per idle period, not per record.
NOT_PER_RECORD = {"hello", "welcome", "heartbeat"}


def messages_per_record(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], records: int
) -> tuple[float, dict[str, float]]:
    """Agent-stream messages per record between two scrapes, both ways, and by kind."""
    by_kind: dict[str, float] = {}
    for key, value in after.items():
        direction, kind = key
        if kind in NOT_PER_RECORD:
            continue
        delta = value - before.get(key, 0.0)
        if delta:
            by_kind[f"{direction}:{kind}"] = round(delta / records, 2)
    return round(sum(by_kind.values()), 2), by_kind
