"""Peer comparison: the fan-out of `fanout.py` and the same with SaltStack, in one run.

Runs `bench/fanout.py` (cloudassist: a server and N real agent processes) and then
`bench/salt_fanout.py` (a salt-master and N salt-minions) with the same agent counts and
number of runs, one after the other so that each has the machine to itself, and prints their
JSON lines and one more per agent count with the ratio cloudassist / Salt (lower is faster):

    .venv/bin/python bench/vs_salt.py --agents 1,10,50 --runs 50
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def figures(script: str, agents: str, runs: int) -> dict[int, dict[str, object]]:
    """The JSON lines a benchmark script prints, by agent count (echoed as they come)."""
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--agents", agents, "--runs", str(runs)],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if result.returncode != 0:
        raise SystemExit(f"{script} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    for line in lines:
        print(json.dumps(line), flush=True)
    return {int(str(line["agents"])): line for line in lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1,10,50", help="comma-separated agent counts")
    parser.add_argument("--runs", type=int, default=50, help="fan-outs per agent count")
    args = parser.parse_args()
    ours = figures("fanout.py", args.agents, args.runs)
    salt = figures("salt_fanout.py", args.agents, args.runs)
    for count in sorted(ours.keys() & salt.keys()):
        a, b = ours[count], salt[count]
        print(
            json.dumps(
                {
                    "benchmark": "vs_salt",
                    "agents": count,
                    "cloudassist_p50_ms": a["p50_ms"],
                    "salt_p50_ms": b["p50_ms"],
                    "p50_ratio": round(float(str(a["p50_ms"])) / float(str(b["p50_ms"])), 3),
                    "p95_ratio": round(float(str(a["p95_ms"])) / float(str(b["p95_ms"])), 3),
                    "salt_version": b.get("salt_version"),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
