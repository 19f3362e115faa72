"""Output throughput: real agents stream `--mib` MiB each (`head -c`); MB/s until every byte is
stored and acknowledged (the record is terminal), checked byte for byte.

    .venv/bin/python bench/throughput.py --mib 200 --agents 1,10

For each agent count, runs one invocation on that many real agent processes and prints one
JSON line: seconds from InvokeCommand until the invocation is over, MB/s per agent and in all,
and beside them the floor: raw SQLite inserts of the same number of bytes on the same disk,
measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.floors import sqlite_insert_floor_mb_s
from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.support import AgentProcess, ServerProcess, client_channel

REGION = "cn-hangzhou"
MIB = 1024 * 1024
POLL_SECONDS = 0.02


async def stream_once(
    server: ServerProcess, ids: list[str], mib: int, workdir: Path
) -> dict[str, object]:
    source = workdir / "source.bin"
    if not source.exists() or source.stat().st_size != mib * MIB:
        with source.open("wb") as out:
            for _ in range(mib):
                out.write(os.urandom(MIB))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    async with client_channel(server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        start = time.perf_counter()
        ran = await stub.RunCommand(
            pb.RunCommandRequest(
                region_id=REGION,
                type=pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
                command_content=f"head -c {mib * MIB} {source}".encode(),
                instance_ids=ids,
                timeout_seconds=600,
            )
        )
        # Polled, not watched: a watcher would have the server stream every byte once more.
        while True:
            described = await stub.DescribeInvocations(
                pb.DescribeInvocationsRequest(region_id=REGION, invoke_id=ran.invoke_id)
            )
            (invocation,) = described.invocations
            if invocation.invoke_status != pb.INVOKE_STATUS_RUNNING:
                break
            await asyncio.sleep(POLL_SECONDS)
        elapsed = time.perf_counter() - start
        states = {i.instance_id: i.state for i in invocation.invoke_instances}
        # Byte-exact: read every record back and compare.
        for instance_id in ids:
            hasher = hashlib.sha256()
            offset = 0
            while True:
                got = await stub.GetInvocationOutput(
                    pb.GetInvocationOutputRequest(
                        region_id=REGION,
                        invoke_id=ran.invoke_id,
                        instance_id=instance_id,
                        offset=offset,
                        limit=3 * MIB,
                    )
                )
                hasher.update(got.data)
                offset = got.next_offset
                if got.eof or not got.data:
                    break
            if offset != mib * MIB or hasher.hexdigest() != digest:
                raise RuntimeError(f"{instance_id}: output is not byte-exact ({offset} bytes)")
    if set(states.values()) != {pb.EXECUTION_STATE_SUCCESS}:
        raise RuntimeError(f"not every record succeeded: {states}")
    total_mb = len(ids) * mib * MIB / 1e6
    return {
        "benchmark": "output-throughput",
        "agents": len(ids),
        "mib_per_agent": mib,
        "seconds": round(elapsed, 2),
        "mb_per_s_per_agent": round(total_mb / len(ids) / elapsed, 1),
        "mb_per_s_total": round(total_mb / elapsed, 1),
        "byte_exact": True,
        "machine": f"{platform.machine()} Python {platform.python_version()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=200, help="MiB each agent streams")
    parser.add_argument("--agents", default="1,10", help="comma-separated agent counts")
    args = parser.parse_args()
    counts = [int(n) for n in args.agents.split(",")]
    with tempfile.TemporaryDirectory(prefix="cloudassist-throughput-") as tmp:
        workdir = Path(tmp)
        server = ServerProcess(
            workdir / "server", "--max-output-bytes", str((args.mib + 1) * MIB),
            "--log-level", "WARNING",
        )  # fmt: skip
        server.start()
        agents: list[AgentProcess] = []
        try:
            for count in counts:
                while len(agents) < count:
                    agent = AgentProcess(server, f"i-tp-{len(agents):02d}", workdir)
                    agent.start()
                    agents.append(agent)
                ids = [a.instance_id for a in agents[:count]]
                result = asyncio.run(stream_once(server, ids, args.mib, workdir))
                floor = sqlite_insert_floor_mb_s(count * args.mib * MIB)
                result["floor_sqlite_insert_mb_s"] = round(floor, 1)
                result["total_over_floor"] = round(float(result["mb_per_s_total"]) / floor, 2)  # type: ignore[arg-type]
                print(json.dumps(result), flush=True)
        finally:
            for agent in agents:
                agent.stop()
            server.stop()


if __name__ == "__main__":
    main()
