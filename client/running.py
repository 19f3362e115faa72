"""`cloudassist run` and `cloudassist watch`: a script's output live until it ends, and the
exit code it ended with. invoke --watch and rerun --watch follow the same way."""

from __future__ import annotations

import asyncio
import os
import sys

from cloudassist.client import flags, render
from cloudassist.client.context import EXIT_CODES_HELP, EXIT_OK, Client
from cloudassist.client.flags import LAUNCHER_HELP, TYPES
from cloudassist.client.follow import Mode, follow
from cloudassist.v1 import command_pb2 as pb


async def run(c: Client) -> int:
    a = c.args
    instance_ids, resource_tags = flags.targets(a)
    script = flags.content(a)
    if script is None:
        script = os.fsencode(a.script) if a.script else b""
    response = await c.commands.RunCommand(
        pb.RunCommandRequest(
            region_id=c.region,
            type=TYPES[a.type],
            command_content=script,
            instance_ids=instance_ids,
            resource_tags=resource_tags,
            timeout_seconds=a.timeout,
            working_dir=a.working_dir,
            username=a.username,
            enable_parameter=bool(a.parameter),
            parameters=flags.parameters(a.parameter),
            client_token=a.client_token,
            env=flags.env(a.env),
            dry_run=a.dry_run,
            launcher=a.launcher,
            max_concurrency=a.max_concurrency,
            max_errors=a.max_errors,
        )
    )
    if a.dry_run:
        return print_dry_run(response, a.json)
    if a.json:
        render.print_json_line({"invocation": render.message_dict(response)})
    else:
        print(f"invocation {response.invoke_id}", file=sys.stderr)
    return await follow_invocation(c, response.invoke_id, instance_ids)


async def watch(c: Client) -> int:
    return await follow_invocation(c, c.args.invoke_id, None)


def print_dry_run(response: pb.InvokeCommandResponse | pb.RunCommandResponse, as_json: bool) -> int:
    """What a dry run would have run; nothing was created."""
    if as_json:
        render.print_json(response.dry_run)
        return EXIT_OK
    for task in response.dry_run.tasks:
        state = "online" if task.online else "offline: would wait for its agent"
        print(f"# {task.instance_id} ({state}), timeout {task.timeout_seconds} s")
        sys.stdout.write(task.script.decode(errors="replace").rstrip("\n") + "\n")
    if response.dry_run.HasField("first_fire_time"):
        print(f"# first run at {render.when(response.dry_run.first_fire_time)}")
    print("# dry run: nothing was created", file=sys.stderr)
    return EXIT_OK


def _mode(c: Client, several: bool) -> Mode:
    """JSON lines with --json; the live view for several instances on a terminal."""
    if c.args.json:
        return "json"
    return "live" if several and sys.stdout.isatty() else "plain"


async def follow_invocation(c: Client, invoke_id: str, instance_ids: list[str] | None) -> int:
    """Follows an invocation to its end. `instance_ids`: those named with -i (none when they
    were chosen by tag); None when not known (watch)."""
    known = list(instance_ids or [])
    if not known and not c.args.json and sys.stdout.isatty():
        # Chosen by tag, or watch: whether it is the live view, and what it counts as pending
        # at first, depend on which instances there are.
        listed = await c.commands.DescribeInvocations(
            pb.DescribeInvocationsRequest(region_id=c.region, invoke_id=invoke_id)
        )
        known = [m.instance_id for inv in listed.invocations for m in inv.invoke_instances]
    several = len(known) != 1
    try:
        return await follow(
            c.commands,
            c.region,
            invoke_id,
            mode=_mode(c, several),
            # For watch, plain output is prefixed once a second instance writes.
            prefix=None if instance_ids is None else several,
            palette=c.palette,
            instance_ids=known,
        )
    except asyncio.CancelledError:
        # Ctrl-C stops the watching, not the invocation.
        render.error(f"stopped following {invoke_id}; to stop it: cloudassist stop {invoke_id}")
        raise


def add_run(sub: flags.Subparsers) -> None:
    rn = sub.add_parser(
        "run",
        help="run a one-off script, print its output live, exit with its exit code",
        description="Runs a script and prints its output as it arrives. On a terminal, several "
        "instances get a live view: a status line, a line per instance as it ends, a summary "
        'table. With --json: JSON lines, {"invocation": ...} first, then each '
        'WatchInvocation event ({"output": ...} or {"state_change": ...}), then '
        '{"summary": {"exit_code": ..., "instances": [...]}}.',
        epilog=EXIT_CODES_HELP,
    )
    rn.add_argument("script", nargs="?", help="the script text")
    rn.add_argument("-i", "--instance", action="append", help="repeatable")
    rn.add_argument(
        "-t", "--tag", action="append", help="KEY=VALUE: every instance with the tag, repeatable"
    )
    rn.add_argument("--file", help="read the script from this file (- for stdin)")
    rn.add_argument("--type", choices=sorted(TYPES), default="shell")
    rn.add_argument("--timeout", type=int, default=0, help="seconds [60]")
    rn.add_argument("--working-dir", default="")
    rn.add_argument("--username", default="")
    rn.add_argument("-p", "--parameter", action="append", help="KEY=VALUE, repeatable")
    rn.add_argument("-e", "--env", action="append", help="NAME=VALUE for the script, repeatable")
    rn.add_argument("--dry-run", action="store_true", help="check and show, create nothing")
    rn.add_argument("--launcher", default="", help=LAUNCHER_HELP)
    flags.rate_control(rn)
    rn.add_argument("--client-token", default="")
    rn.set_defaults(handler=run)


def add_watch(sub: flags.Subparsers) -> None:
    wt = sub.add_parser(
        "watch",
        help="print an invocation's output live until it ends",
        description="Stored output first, then live until the invocation ends; the live view "
        "on a terminal, JSON lines with --json (as run prints them).",
        epilog=EXIT_CODES_HELP,
    )
    wt.add_argument("invoke_id")
    wt.set_defaults(handler=watch)
