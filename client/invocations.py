"""Invocations of saved commands: `invoke`, `rerun`, `modify-invocation`, `stop`, the listings
`invocations` and `results`, a record's `output`, and `schedule` (a frequency's fire times)."""

from __future__ import annotations

import sys

from cloudassist.client import flags, render
from cloudassist.client.context import EXIT_CODES_HELP, EXIT_OK, Client
from cloudassist.client.running import follow_invocation, print_dry_run
from cloudassist.client.style import paint_state
from cloudassist.v1 import command_pb2 as pb

REPEAT_MODES = {
    "once": pb.REPEAT_MODE_ONCE,
    "period": pb.REPEAT_MODE_PERIOD,
    "next-reboot": pb.REPEAT_MODE_NEXT_REBOOT_ONLY,
    "every-reboot": pb.REPEAT_MODE_EVERY_REBOOT,
}
# The failed states `rerun --state` chooses from (all of them by default).
RERUN_STATES = {
    "failed": pb.EXECUTION_STATE_FAILED,
    "timeout": pb.EXECUTION_STATE_TIMEOUT,
    "aborted": pb.EXECUTION_STATE_ABORTED,
    "invalid": pb.EXECUTION_STATE_INVALID,
    "error": pb.EXECUTION_STATE_ERROR,
}
STATUSES = {
    "running": pb.INVOKE_STATUS_RUNNING,
    "finished": pb.INVOKE_STATUS_FINISHED,
    "failed": pb.INVOKE_STATUS_FAILED,
    "stopped": pb.INVOKE_STATUS_STOPPED,
    "partial-failed": pb.INVOKE_STATUS_PARTIAL_FAILED,
}


async def invoke(c: Client) -> int:
    a = c.args
    instance_ids, resource_tags = flags.targets(a)
    request = pb.InvokeCommandRequest(
        region_id=c.region,
        command_id=a.command_id,
        instance_ids=instance_ids,
        resource_tags=resource_tags,
        parameters=flags.parameters(a.parameter),
        username=a.username,
        client_token=a.client_token,
        env=flags.env(a.env),
        dry_run=a.dry_run,
        max_concurrency=a.max_concurrency,
        max_errors=a.max_errors,
        frequency=a.frequency or "",
        repeat_mode=(
            REPEAT_MODES[a.repeat_mode]
            if a.repeat_mode
            else pb.REPEAT_MODE_PERIOD
            if a.frequency
            else pb.REPEAT_MODE_UNSPECIFIED
        ),
    )
    if a.timeout is not None:
        request.timeout_seconds = a.timeout
    if a.working_dir is not None:
        request.working_dir = a.working_dir
    response = await c.commands.InvokeCommand(request)
    if a.dry_run:
        return print_dry_run(response, a.json)
    _print_started(c, response)
    if a.watch:
        return await follow_invocation(c, response.invoke_id, instance_ids)
    return EXIT_OK


def _print_started(
    c: Client, response: pb.InvokeCommandResponse | pb.RerunInvocationResponse
) -> None:
    """The new invocation's id; with --json the response (a JSON line when followed)."""
    if c.args.json and c.args.watch:
        # JSON lines, as run prints them.
        render.print_json_line({"invocation": render.message_dict(response)})
    elif c.args.json:
        render.print_json(response)
    else:
        print(response.invoke_id)


def _rerun_states(values: list[str] | None) -> list[pb.ExecutionState.ValueType]:
    """--state values (repeatable, comma-separated) as execution states."""
    states = []
    for value in ",".join(values or []).split(","):
        name = value.strip().lower()
        if not name:
            continue
        if name not in RERUN_STATES:
            raise SystemExit(
                f"cloudassist: --state takes {', '.join(RERUN_STATES)}, not {value.strip()!r}"
            )
        states.append(RERUN_STATES[name])
    return states


async def rerun(c: Client) -> int:
    a = c.args
    response = await c.commands.RerunInvocation(
        pb.RerunInvocationRequest(
            region_id=c.region,
            invoke_id=a.invoke_id,
            states=_rerun_states(a.state),
            instance_ids=a.instance,
            client_token=a.client_token,
        )
    )
    _print_started(c, response)
    if a.watch:
        return await follow_invocation(c, response.invoke_id, list(response.instance_ids))
    return EXIT_OK


async def modify_invocation(c: Client) -> int:
    a = c.args
    request = pb.ModifyInvocationAttributeRequest(
        region_id=c.region,
        invoke_id=a.invoke_id,
        instance_ids=a.instance,
        parameters=flags.parameters(a.parameter),
        replace_parameters=a.parameter is not None,
    )
    content = flags.content(a)
    if content is not None:
        request.command_content = content
    if a.frequency is not None:
        request.frequency = a.frequency
    return c.done(await c.commands.ModifyInvocationAttribute(request))


async def invocations(c: Client) -> int:
    a = c.args
    response = await c.commands.DescribeInvocations(
        pb.DescribeInvocationsRequest(
            region_id=c.region,
            invoke_id=a.id,
            command_id=a.command_id,
            instance_id=a.instance_id,
            invoke_status=STATUSES[a.status] if a.status else pb.INVOKE_STATUS_UNSPECIFIED,
            page_size=a.page_size,
            page_token=a.page_token,
            command_name=a.command_name,
        )
    )
    p = c.palette
    return c.listing(
        response,
        response.invocations,
        [
            ("INVOKE_ID", lambda inv: inv.invoke_id),
            ("COMMAND", lambda inv: inv.command_name),
            (
                "STATUS",
                lambda inv: paint_state(
                    p, render.enum_suffix(pb.InvokeStatus.Name(inv.invoke_status))
                ),
            ),
            (
                "INSTANCES",
                lambda inv: " ".join(
                    f"{m.instance_id}:"
                    + paint_state(p, render.enum_suffix(pb.ExecutionState.Name(m.state)))
                    for m in inv.invoke_instances
                ),
            ),
            ("CREATED", lambda inv: render.when(inv.creation_time)),
        ],
    )


async def results(c: Client) -> int:
    a = c.args
    response = await c.commands.DescribeInvocationResults(
        pb.DescribeInvocationResultsRequest(
            region_id=c.region,
            invoke_id=a.invoke_id or "",
            instance_id=a.instance_id,
            command_id=a.command_id,
            invoke_record_status=STATUSES[a.status] if a.status else pb.INVOKE_STATUS_UNSPECIFIED,
            include_history=a.history,
            page_size=a.page_size,
            page_token=a.page_token,
        )
    )
    p = c.palette
    return c.listing(
        response,
        response.invocation_results,
        [
            ("INVOKE_ID", lambda r: r.invoke_id),
            ("INSTANCE", lambda r: r.instance_id),
            (
                "STATE",
                lambda r: paint_state(p, render.enum_suffix(pb.ExecutionState.Name(r.state))),
            ),
            (
                "STATUS",
                lambda r: paint_state(
                    p, render.enum_suffix(pb.InvokeStatus.Name(r.invoke_record_status))
                ),
            ),
            ("EXIT", lambda r: r.exit_code if r.HasField("exit_code") else "-"),
            (
                "OUTPUT",
                lambda r: f"{r.output_size} B" + (f" (+{r.dropped} dropped)" if r.dropped else ""),
            ),
            ("ERROR", lambda r: r.error_code or "-"),
            ("FINISHED", lambda r: render.when(r.finish_time)),
        ],
    )


async def output(c: Client) -> int:
    """Writes a record's whole stored output to stdout, byte for byte (with --json, one
    GetInvocationOutputResponse holding all of it)."""
    a = c.args
    offset = 0
    out = sys.stdout.buffer
    whole = pb.GetInvocationOutputResponse()
    while True:
        response = await c.commands.GetInvocationOutput(
            pb.GetInvocationOutputRequest(
                region_id=c.region,
                invoke_id=a.invoke_id,
                instance_id=a.instance_id,
                record_id=a.record_id,
                offset=offset,
            )
        )
        if a.json:
            data = whole.data + response.data
            whole.CopyFrom(response)
            whole.data = data
        else:
            out.write(response.data)
        offset = response.next_offset
        if not response.data or offset >= response.total_size:
            break
    if a.json:
        # One response holding all of it (data is Base64 in JSON).
        render.print_json(whole)
    out.flush()
    return EXIT_OK


async def stop(c: Client) -> int:
    response = await c.commands.StopInvocation(
        pb.StopInvocationRequest(
            region_id=c.region, invoke_id=c.args.invoke_id, instance_ids=c.args.instance
        )
    )
    return c.done(response)


async def schedule(c: Client) -> int:
    a = c.args
    response = await c.commands.PreviewSchedule(
        pb.PreviewScheduleRequest(
            region_id=c.region, frequency=a.frequency, timeout_seconds=a.timeout, count=a.count
        )
    )
    if a.json:
        render.print_json(response)
        return EXIT_OK
    for fire in response.fire_times:
        print(fire.local_time)
    return EXIT_OK


def add_invoke(sub: flags.Subparsers) -> None:
    inv = sub.add_parser("invoke", help="run a saved command on instances")
    inv.add_argument("command_id")
    inv.add_argument("-i", "--instance", action="append", help="repeatable")
    inv.add_argument(
        "-t", "--tag", action="append", help="KEY=VALUE: every instance with the tag, repeatable"
    )
    inv.add_argument("-p", "--parameter", action="append", help="KEY=VALUE, repeatable")
    inv.add_argument("--timeout", type=int, help="seconds [the command's]")
    inv.add_argument("--working-dir")
    inv.add_argument("--username", default="")
    inv.add_argument("-e", "--env", action="append", help="NAME=VALUE for the script, repeatable")
    inv.add_argument("--frequency", help="run on a schedule: cron, rate(30s|5m|2h|1d) or at(...)")
    inv.add_argument(
        "--repeat-mode",
        choices=sorted(REPEAT_MODES),
        help="[once; period with --frequency]",
    )
    inv.add_argument("--dry-run", action="store_true", help="check and show, create nothing")
    flags.rate_control(inv)
    inv.add_argument("--client-token", default="")
    inv.add_argument("--watch", action="store_true", help="print output until it ends")
    inv.set_defaults(handler=invoke)


def add_rerun(sub: flags.Subparsers) -> None:
    rr = sub.add_parser(
        "rerun",
        help="run an ended invocation again on its failed instances",
        description="Starts a new invocation of the same script, parameters and options, "
        "once, on the instances whose latest record failed (by default any of: "
        f"{', '.join(RERUN_STATES)}; FAILED is an exit code other than 0). Prints its id.",
        epilog=EXIT_CODES_HELP,
    )
    rr.add_argument("invoke_id")
    chosen = rr.add_mutually_exclusive_group()
    chosen.add_argument("--failed", action="store_true", help="every failed instance (the default)")
    chosen.add_argument(
        "--state",
        action="append",
        help=f"only these, comma-separated or repeated: {','.join(RERUN_STATES)}",
    )
    rr.add_argument("-i", "--instance", action="append", default=[], help="only these failed ones")
    rr.add_argument("--client-token", default="")
    rr.add_argument("--watch", action="store_true", help="print output until it ends")
    rr.set_defaults(handler=rerun)


def add_modify_invocation(sub: flags.Subparsers) -> None:
    mi = sub.add_parser(
        "modify-invocation", help="change a periodic invocation's script, parameters or schedule"
    )
    mi.add_argument("invoke_id")
    flags.script_source(mi, required=False)
    mi.add_argument("-p", "--parameter", action="append", help="KEY=VALUE: replaces them all")
    mi.add_argument("--frequency", help="a new schedule: cron, rate(...) or at(...)")
    mi.add_argument("-i", "--instance", action="append", default=[], help="add this instance")
    mi.set_defaults(handler=modify_invocation)


def add_invocations(sub: flags.Subparsers) -> None:
    invs = sub.add_parser("invocations", help="list invocations, newest first")
    invs.add_argument("--id", default="")
    invs.add_argument("--command-id", default="")
    invs.add_argument("--command-name", default="", help="command names containing this, any case")
    invs.add_argument("--instance-id", default="", help="invocations that include it")
    invs.add_argument("--status", choices=sorted(STATUSES))
    flags.paged(invs)
    invs.set_defaults(handler=invocations)


def add_results(sub: flags.Subparsers) -> None:
    res = sub.add_parser("results", help="list execution records with exit codes")
    res.add_argument("invoke_id", nargs="?")
    res.add_argument("--instance-id", default="")
    res.add_argument("--command-id", default="")
    res.add_argument("--status", choices=sorted(STATUSES))
    res.add_argument("--history", action="store_true", help="every run of periodic invocations")
    flags.paged(res)
    res.set_defaults(handler=results)


def add_output(sub: flags.Subparsers) -> None:
    out = sub.add_parser("output", help="print a record's whole output")
    out.add_argument("invoke_id")
    out.add_argument("-i", "--instance-id", default="")
    out.add_argument("--record-id", default="")
    out.set_defaults(handler=output)


def add_stop(sub: flags.Subparsers) -> None:
    st = sub.add_parser("stop", help="stop an invocation")
    st.add_argument("invoke_id")
    st.add_argument("-i", "--instance", action="append", default=[], help="[all]")
    st.set_defaults(handler=stop)


def add_schedule(sub: flags.Subparsers) -> None:
    sch = sub.add_parser("schedule", help="the next fire times of a frequency (cron, rate, at)")
    sch.add_argument("frequency", help="as invoke --frequency, e.g. '0 */20 * * * ?'")
    sch.add_argument("-n", "--count", type=int, default=5, help="how many [%(default)s]")
    sch.add_argument("--timeout", type=int, help="the invocation's timeout: a rate must be longer")
    sch.set_defaults(handler=schedule)
