"""Time `cmd.run 'echo hi'` on every salt minion through salt.client.LocalClient.

Helper of bench/salt_fanout.py, run with the salt venv's interpreter (never the project's), so
salt's CLI start-up is not in the figures. Waits until exactly the given minions answer
test.ping, does one warm-up run, then `--runs` timed ones, each checked to have "hi" from every
minion, and prints one JSON object: {"salt_version": ..., "times_ms": [...]}.

    bench/.salt-venv/bin/python bench/salt_timer.py --config DIR/master --ids a,b --runs 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import salt.client
import salt.version


def wait_for_minions(client: salt.client.LocalClient, ids: set[str], deadline: float) -> None:
    last: object = None
    while time.monotonic() < deadline:
        try:
            answers = client.cmd("*", "test.ping", timeout=5)
        except Exception as exc:  # the master's event bus may not be up yet
            answers, last = {}, exc
        else:
            last = answers
        if set(answers) == ids and all(value is True for value in answers.values()):
            return
        time.sleep(0.5)
    raise RuntimeError(f"minions {sorted(ids)} did not all answer test.ping in time: {last!r}")


def one_run(client: salt.client.LocalClient, ids: set[str], timeout: float) -> float:
    start = time.perf_counter()
    answers = client.cmd("*", "cmd.run", ["echo hi"], timeout=timeout)
    elapsed = time.perf_counter() - start
    if set(answers) != ids or any(value != "hi" for value in answers.values()):
        raise RuntimeError(f"cmd.run did not answer 'hi' on every minion: {answers!r}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="path of the master config file")
    parser.add_argument("--ids", required=True, help="comma-separated ids of all the minions")
    parser.add_argument("--runs", type=int, default=50, help="timed runs")
    parser.add_argument("--timeout", type=float, default=60.0, help="cmd.run timeout, seconds")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="test.ping wait, s")
    args = parser.parse_args()
    ids = set(args.ids.split(","))
    client = salt.client.LocalClient(c_path=args.config)
    try:
        wait_for_minions(client, ids, time.monotonic() + args.ready_timeout)
        one_run(client, ids, args.timeout)  # warm-up
        times = [one_run(client, ids, args.timeout) for _ in range(args.runs)]
    finally:
        client.destroy()
    json.dump(
        {"salt_version": salt.version.__version__, "times_ms": [t * 1000 for t in times]},
        sys.stdout,
    )
    print(flush=True)


if __name__ == "__main__":
    main()
