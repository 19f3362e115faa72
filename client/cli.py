"""`cloudassist`: the command-line client. It mirrors the API, plus `run` for one-off scripts.

Defaults reach a local server (127.0.0.1:50051, region cn-hangzhou); --server/--region or the
environment variables CLOUDASSIST_SERVER and CLOUDASSIST_REGION override them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from google.protobuf.message import Message
from grpc import aio

from client import auth, completion, render, style
from client.follow import EXIT_NOT_RUN, EXIT_STOPPED, EXIT_TIMEOUT, Mode, follow
from client.style import paint_state
from cloudassist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    command_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    tag_pb2,
)
from cloudassist.v1 import command_pb2 as pb

# Exit codes of every command; run, watch, invoke --watch and rerun --watch exit with the
# script's own code or one of client/follow.py's.
EXIT_OK = 0
EXIT_LOCAL_ERROR = 1
EXIT_API_ERROR = 2
EXIT_CODES_HELP = (
    f"Exit status: {EXIT_OK} on success; {EXIT_LOCAL_ERROR} for a problem found before calling "
    f"the server (a bad KEY=VALUE, a file that cannot be read); {EXIT_API_ERROR} for a bad "
    "command line or when the server refused the request or could not be reached. run, watch, "
    "invoke --watch and rerun --watch exit with the script's exit code (the first failing "
    f"instance's when there are several), {EXIT_TIMEOUT} on timeout, {EXIT_NOT_RUN} when it "
    f"could not run, {EXIT_STOPPED} when it was stopped (or on Ctrl-C)."
)

TYPES = {
    "shell": pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
    "bat": pb.COMMAND_TYPE_RUN_BAT_SCRIPT,
    "powershell": pb.COMMAND_TYPE_RUN_POWERSHELL_SCRIPT,
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


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.region = args.region
        # Colours for what goes to stdout: tables and the live view.
        self.palette = style.Palette(style.use_color(args.color, sys.stdout.isatty(), os.environ))
        token = auth.find_api_key(args.api_key, args.server, auth.load_config())
        self.channel = auth.channel(args.server, token, args.ca)
        self.commands = command_pb2_grpc.CommandServiceStub(self.channel)
        self.instances = instance_pb2_grpc.InstanceServiceStub(self.channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(self.channel)


def _content(args: argparse.Namespace) -> bytes | None:
    if getattr(args, "file", None):
        return Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    if getattr(args, "content", None) is not None:
        # The bytes the shell passed: os.fsencode undoes how Python decoded argv.
        return os.fsencode(str(args.content))
    return None


REPEAT_MODES = {
    "once": pb.REPEAT_MODE_ONCE,
    "period": pb.REPEAT_MODE_PERIOD,
    "next-reboot": pb.REPEAT_MODE_NEXT_REBOOT_ONLY,
    "every-reboot": pb.REPEAT_MODE_EVERY_REBOOT,
}
LAUNCHER_HELP = "run the script with this, e.g. 'python3 -u {{ACS::ScriptFile}}'"


def _pairs(pairs: list[str] | None, flag: str) -> dict[str, str]:
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"cloudassist: {flag} takes KEY=VALUE, not {pair!r}")
        result[key] = value
    return result


def _parameters(pairs: list[str] | None) -> dict[str, str]:
    return _pairs(pairs, "--parameter")


def _env(pairs: list[str] | None) -> dict[str, str]:
    return _pairs(pairs, "--env")


def _tags(pairs: list[str] | None) -> list[tag_pb2.Tag]:
    return [tag_pb2.Tag(key=k, value=v) for k, v in _pairs(pairs, "--tag").items()]


def _targets(args: argparse.Namespace) -> tuple[list[str], list[tag_pb2.Tag]]:
    """Instances named with -i, or selected with --tag: one of the two."""
    if bool(args.instance) == bool(args.tag):
        raise SystemExit("cloudassist: give the instances with -i ID or --tag KEY=VALUE")
    return list(args.instance or []), _tags(args.tag)


# Commands -------------------------------------------------------------------------------


async def commands_create(c: Client) -> int:
    a = c.args
    content = _content(a)
    response = await c.commands.CreateCommand(
        pb.CreateCommandRequest(
            region_id=c.region,
            name=a.name,
            type=TYPES[a.type],
            command_content=content or b"",
            description=a.description,
            working_dir=a.working_dir,
            timeout_seconds=a.timeout,
            enable_parameter=a.enable_parameter,
            client_token=a.client_token,
            tags=_tags(a.tag),
            launcher=a.launcher,
        )
    )
    return _done(c, response, response.command_id)


async def commands_list(c: Client) -> int:
    a = c.args
    request = pb.DescribeCommandsRequest(
        region_id=c.region,
        command_id=a.id,
        name=a.name,
        type=TYPES[a.type] if a.type else pb.COMMAND_TYPE_UNSPECIFIED,
        page_size=a.page_size,
        page_token=a.page_token,
        tags=_tags(a.tag),
    )
    response = await c.commands.DescribeCommands(request)
    if a.json:
        render.print_json(response)
        return 0
    render.print_table(
        ["COMMAND_ID", "NAME", "TYPE", "TIMEOUT", "PARAMETERS", "INVOKED", "CREATED"],
        [
            [
                cmd.command_id,
                cmd.name,
                render.enum_suffix(pb.CommandType.Name(cmd.type)),
                cmd.timeout_seconds,
                ",".join(cmd.parameter_names) or "-",
                cmd.invoke_times,
                render.when(cmd.creation_time),
            ]
            for cmd in response.commands
        ],
        c.palette,
    )
    _footer(response.total_count, len(response.commands), response.next_page_token)
    return 0


async def commands_modify(c: Client) -> int:
    a = c.args
    request = pb.ModifyCommandRequest(region_id=c.region, command_id=a.command_id)
    if a.name is not None:
        request.name = a.name
    if a.description is not None:
        request.description = a.description
    if a.working_dir is not None:
        request.working_dir = a.working_dir
    if a.timeout is not None:
        request.timeout_seconds = a.timeout
    content = _content(a)
    if content is not None:
        request.command_content = content
    return _done(c, await c.commands.ModifyCommand(request))


async def commands_delete(c: Client) -> int:
    response = await c.commands.DeleteCommand(
        pb.DeleteCommandRequest(region_id=c.region, command_id=c.args.command_id)
    )
    return _done(c, response)


# Invocations ----------------------------------------------------------------------------


async def invoke(c: Client) -> int:
    a = c.args
    instance_ids, resource_tags = _targets(a)
    request = pb.InvokeCommandRequest(
        region_id=c.region,
        command_id=a.command_id,
        instance_ids=instance_ids,
        resource_tags=resource_tags,
        parameters=_parameters(a.parameter),
        username=a.username,
        client_token=a.client_token,
        env=_env(a.env),
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
        return _print_dry_run(response, a.json)
    if a.json and a.watch:
        # JSON lines, as run prints them.
        render.print_json_line({"invocation": render.message_dict(response)})
    elif a.json:
        render.print_json(response)
    else:
        print(response.invoke_id)
    if a.watch:
        return await _follow(c, response.invoke_id, instance_ids)
    return 0


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
    if a.json and a.watch:
        render.print_json_line({"invocation": render.message_dict(response)})
    elif a.json:
        render.print_json(response)
    else:
        print(response.invoke_id)
    if a.watch:
        return await _follow(c, response.invoke_id, list(response.instance_ids))
    return 0


async def send_file(c: Client) -> int:
    a = c.args
    instance_ids, resource_tags = _targets(a)
    content = _content(a) or b""
    response = await c.commands.SendFile(
        pb.SendFileRequest(
            region_id=c.region,
            name=a.name,
            target_dir=a.target_dir,
            content=content,
            file_mode=a.mode,
            file_owner=a.owner,
            file_group=a.group,
            overwrite=a.overwrite,
            timeout_seconds=a.timeout,
            instance_ids=instance_ids,
            resource_tags=resource_tags,
            client_token=a.client_token,
        )
    )
    return _done(c, response, response.invoke_id)


async def file_results(c: Client) -> int:
    a = c.args
    response = await c.commands.DescribeSendFileResults(
        pb.DescribeSendFileResultsRequest(
            region_id=c.region,
            invoke_id=a.invoke_id or "",
            instance_id=a.instance_id,
            page_size=a.page_size,
            page_token=a.page_token,
        )
    )
    if a.json:
        render.print_json(response)
        return 0
    render.print_table(
        ["INVOKE_ID", "INSTANCE_ID", "FILE", "STATE", "ERROR", "FINISHED"],
        [
            [
                r.invoke_id,
                r.instance_id,
                f"{r.target_dir.rstrip('/')}/{r.name}",
                paint_state(c.palette, render.enum_suffix(pb.ExecutionState.Name(r.state))),
                r.error_code,
                render.when(r.finish_time),
            ]
            for r in response.results
        ],
        c.palette,
    )
    _footer(response.total_count, len(response.results), response.next_page_token)
    return 0


async def modify_invocation(c: Client) -> int:
    a = c.args
    request = pb.ModifyInvocationAttributeRequest(
        region_id=c.region,
        invoke_id=a.invoke_id,
        instance_ids=a.instance,
        parameters=_parameters(a.parameter),
        replace_parameters=a.parameter is not None,
    )
    content = _content(a)
    if content is not None:
        request.command_content = content
    if a.frequency is not None:
        request.frequency = a.frequency
    return _done(c, await c.commands.ModifyInvocationAttribute(request))


def _print_dry_run(
    response: pb.InvokeCommandResponse | pb.RunCommandResponse, as_json: bool
) -> int:
    """What a dry run would have run; nothing was created."""
    if as_json:
        render.print_json(response.dry_run)
        return 0
    for task in response.dry_run.tasks:
        state = "online" if task.online else "offline: would wait for its agent"
        print(f"# {task.instance_id} ({state}), timeout {task.timeout_seconds} s")
        sys.stdout.write(task.script.decode(errors="replace").rstrip("\n") + "\n")
    if response.dry_run.HasField("first_fire_time"):
        print(f"# first run at {render.when(response.dry_run.first_fire_time)}")
    print("# dry run: nothing was created", file=sys.stderr)
    return 0


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
    if a.json:
        render.print_json(response)
        return 0
    render.print_table(
        ["INVOKE_ID", "COMMAND", "STATUS", "INSTANCES", "CREATED"],
        [
            [
                inv.invoke_id,
                inv.command_name,
                paint_state(c.palette, render.enum_suffix(pb.InvokeStatus.Name(inv.invoke_status))),
                " ".join(
                    f"{m.instance_id}:"
                    + paint_state(c.palette, render.enum_suffix(pb.ExecutionState.Name(m.state)))
                    for m in inv.invoke_instances
                ),
                render.when(inv.creation_time),
            ]
            for inv in response.invocations
        ],
        c.palette,
    )
    _footer(response.total_count, len(response.invocations), response.next_page_token)
    return 0


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
    if a.json:
        render.print_json(response)
        return 0
    render.print_table(
        ["INVOKE_ID", "INSTANCE", "STATE", "STATUS", "EXIT", "OUTPUT", "ERROR", "FINISHED"],
        [
            [
                r.invoke_id,
                r.instance_id,
                paint_state(c.palette, render.enum_suffix(pb.ExecutionState.Name(r.state))),
                paint_state(
                    c.palette, render.enum_suffix(pb.InvokeStatus.Name(r.invoke_record_status))
                ),
                r.exit_code if r.HasField("exit_code") else "-",
                f"{r.output_size} B" + (f" (+{r.dropped} dropped)" if r.dropped else ""),
                r.error_code or "-",
                render.when(r.finish_time),
            ]
            for r in response.invocation_results
        ],
        c.palette,
    )
    _footer(response.total_count, len(response.invocation_results), response.next_page_token)
    return 0


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
    return 0


async def stop(c: Client) -> int:
    response = await c.commands.StopInvocation(
        pb.StopInvocationRequest(
            region_id=c.region, invoke_id=c.args.invoke_id, instance_ids=c.args.instance
        )
    )
    return _done(c, response)


async def schedule(c: Client) -> int:
    a = c.args
    response = await c.commands.PreviewSchedule(
        pb.PreviewScheduleRequest(
            region_id=c.region, frequency=a.frequency, timeout_seconds=a.timeout, count=a.count
        )
    )
    if a.json:
        render.print_json(response)
        return 0
    for fire in response.fire_times:
        print(fire.local_time)
    return 0


async def instances(c: Client) -> int:
    a = c.args
    response = await c.instances.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(
            region_id=c.region,
            instance_ids=a.instance,
            page_size=a.page_size,
            page_token=a.page_token,
            tags=_tags(a.tag),
        )
    )
    if a.json:
        render.print_json(response)
        return 0
    render.print_table(
        [
            "INSTANCE_ID",
            "ONLINE",
            "OS",
            "HOSTNAME",
            "AGENT",
            "ACTIVE",
            "INVOCATIONS",
            "HEARTBEAT",
            "TAGS",
        ],
        [
            [
                i.instance_id,
                c.palette.paint("yes", "green") if i.online else c.palette.paint("no", "red"),
                render.enum_suffix(instance_pb2.OsType.Name(i.os_type)),
                i.hostname,
                i.agent_version,
                i.active_task_count,
                i.invocation_count,
                render.when(i.last_heartbeat_time),
                ",".join(f"{t.key}={t.value}" for t in i.tags),
            ]
            for i in response.instances
        ],
        c.palette,
    )
    _footer(response.total_count, len(response.instances), response.next_page_token)
    return 0


async def regions(c: Client) -> int:
    response = await c.instances.DescribeRegions(instance_pb2.DescribeRegionsRequest())
    if c.args.json:
        render.print_json(response)
        return 0
    render.print_table(
        ["REGION", "INSTANCES", "ONLINE", "COMMANDS"],
        [
            [r.region_id, r.instance_count, r.online_count, r.command_count]
            for r in response.regions
        ],
        c.palette,
    )
    return 0


async def tag(c: Client) -> int:
    response = await c.instances.TagInstances(
        instance_pb2.TagInstancesRequest(
            region_id=c.region, instance_ids=c.args.instance, tags=_tags(c.args.tag)
        )
    )
    return _done(c, response)


async def untag(c: Client) -> int:
    response = await c.instances.UntagInstances(
        instance_pb2.UntagInstancesRequest(
            region_id=c.region, instance_ids=c.args.instance, keys=c.args.key
        )
    )
    return _done(c, response)


async def deregister(c: Client) -> int:
    response = await c.instances.DeregisterInstance(
        instance_pb2.DeregisterInstanceRequest(region_id=c.region, instance_id=c.args.instance_id)
    )
    return _done(c, response)


# Administration -------------------------------------------------------------------------


async def accounts_create(c: Client) -> int:
    response = await c.admin.CreateAccount(
        admin_pb2.CreateAccountRequest(name=c.args.name, admin=c.args.admin)
    )
    return _done(c, response, response.account.account_id)


async def accounts_list(c: Client) -> int:
    a = c.args
    response = await c.admin.ListAccounts(
        admin_pb2.ListAccountsRequest(page_size=a.page_size, page_token=a.page_token)
    )
    if a.json:
        render.print_json(response)
        return 0
    render.print_table(
        ["ACCOUNT_ID", "NAME", "ADMIN", "CREATED"],
        [
            [x.account_id, x.name, "yes" if x.admin else "no", render.when(x.creation_time)]
            for x in response.accounts
        ],
        c.palette,
    )
    _footer(response.total_count, len(response.accounts), response.next_page_token)
    return 0


async def keys_create(c: Client) -> int:
    response = await c.admin.CreateApiKey(
        admin_pb2.CreateApiKeyRequest(account_id=c.args.account, description=c.args.description)
    )
    return _done(c, response, response.token)


async def keys_list(c: Client) -> int:
    a = c.args
    response = await c.admin.ListApiKeys(
        admin_pb2.ListApiKeysRequest(
            account_id=a.account, page_size=a.page_size, page_token=a.page_token
        )
    )
    if a.json:
        render.print_json(response)
        return 0
    render.print_table(
        ["KEY_ID", "ACCOUNT_ID", "DESCRIPTION", "CREATED", "REVOKED"],
        [
            [
                k.key_id,
                k.account_id,
                k.description or "-",
                render.when(k.creation_time),
                render.when(k.revocation_time),
            ]
            for k in response.keys
        ],
        c.palette,
    )
    _footer(response.total_count, len(response.keys), response.next_page_token)
    return 0


async def keys_revoke(c: Client) -> int:
    return _done(c, await c.admin.RevokeApiKey(admin_pb2.RevokeApiKeyRequest(key_id=c.args.key_id)))


async def activations_create(c: Client) -> int:
    a = c.args
    request = admin_pb2.CreateActivationRequest(
        account_id=a.account,
        region_id=c.region,
        description=a.description,
        max_registrations=a.max_registrations,
    )
    if a.expires_in:
        request.expiration_time.FromSeconds(int(time.time()) + a.expires_in)
    response = await c.admin.CreateActivation(request)
    return _done(c, response, response.activation.activation_id, response.activation_code)


async def activations_list(c: Client) -> int:
    a = c.args
    response = await c.admin.ListActivations(
        admin_pb2.ListActivationsRequest(page_size=a.page_size, page_token=a.page_token)
    )
    if a.json:
        render.print_json(response)
        return 0
    render.print_table(
        ["ACTIVATION_ID", "ACCOUNT_ID", "REGION", "USED", "EXPIRES"],
        [
            [
                x.activation_id,
                x.account_id,
                x.region_id,
                f"{x.registrations}/{x.max_registrations}",
                render.when(x.expiration_time),
            ]
            for x in response.activations
        ],
        c.palette,
    )
    _footer(response.total_count, len(response.activations), response.next_page_token)
    return 0


async def audit(c: Client) -> int:
    a = c.args
    response = await c.admin.ListAuditEvents(
        admin_pb2.ListAuditEventsRequest(
            account_id=a.account, method=a.method, page_size=a.page_size, page_token=a.page_token
        )
    )
    if a.json:
        render.print_json(response)
        return 0
    render.print_table(
        ["TIME", "ACCOUNT_ID", "KEY_ID", "METHOD", "CODE", "IDS"],
        [
            [
                render.when(e.time),
                e.account_id,
                e.key_id,
                e.method.rsplit("/", 1)[-1],
                e.code,
                " ".join(e.resource_ids),
            ]
            for e in response.events
        ],
        c.palette,
    )
    _footer(response.total_count, len(response.events), response.next_page_token)
    return 0


def _done(c: Client, response: Message, *words: object) -> int:
    """With --json, the response; else `words` (the ids a script wants) on one line, or
    nothing for calls that answer nothing but success."""
    if c.args.json:
        render.print_json(response)
    elif words:
        print(*words)
    return 0


def _footer(total: int, shown: int, token: str) -> None:
    if token:
        print(f"({shown} of {total}; next page: --page-token {token})")


# Running and watching -------------------------------------------------------------------


async def run(c: Client) -> int:
    a = c.args
    instance_ids, resource_tags = _targets(a)
    script = _content(a)
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
            parameters=_parameters(a.parameter),
            client_token=a.client_token,
            env=_env(a.env),
            dry_run=a.dry_run,
            launcher=a.launcher,
            max_concurrency=a.max_concurrency,
            max_errors=a.max_errors,
        )
    )
    if a.dry_run:
        return _print_dry_run(response, a.json)
    if a.json:
        render.print_json_line({"invocation": render.message_dict(response)})
    else:
        print(f"invocation {response.invoke_id}", file=sys.stderr)
    return await _follow(c, response.invoke_id, instance_ids)


async def watch(c: Client) -> int:
    return await _follow(c, c.args.invoke_id, None)


def _mode(c: Client, several: bool) -> Mode:
    """JSON lines with --json; the live view for several instances on a terminal."""
    if c.args.json:
        return "json"
    return "live" if several and sys.stdout.isatty() else "plain"


async def _follow(c: Client, invoke_id: str, instance_ids: list[str] | None) -> int:
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


# Argument parsing -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    config = auth.load_config()
    parser = argparse.ArgumentParser(
        prog="cloudassist",
        description="Run scripts on machines through a cloudassist server. Settings come from "
        "flags, then environment variables, then the config file "
        f"({auth.config_path()}; TOML with server, region, api_key, ca).",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"cloudassist {importlib.metadata.version('cloudassist')}",
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("CLOUDASSIST_SERVER", config.get("server", "127.0.0.1:50051")),
        help="host:port of the server (env CLOUDASSIST_SERVER) [%(default)s]",
    )
    parser.add_argument(
        "--region",
        default=os.environ.get("CLOUDASSIST_REGION", config.get("region", "cn-hangzhou")),
        help="region id (env CLOUDASSIST_REGION) [%(default)s]",
    )
    parser.add_argument(
        "--api-key",
        help="API key '<key id>.<secret>' (env CLOUDASSIST_API_KEY; for a server on this "
        "machine, ./var/admin.key is used when nothing else is given)",
    )
    ca_default = os.environ.get("CLOUDASSIST_CA", config.get("ca", ""))
    parser.add_argument(
        "--ca",
        type=Path,
        default=Path(ca_default) if ca_default else None,
        help="connect with TLS, trusting this PEM CA bundle (env CLOUDASSIST_CA)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print machine-readable JSON (also accepted after the command)",
    )
    parser.add_argument(
        "--color",
        choices=style.COLOR_CHOICES,
        default="auto",
        help="colours: auto means on a terminal unless NO_COLOR is set [%(default)s]",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def paged(p: argparse.ArgumentParser) -> None:
        p.add_argument("--page-size", type=int, default=0, help="1 to 50 [10]")
        p.add_argument("--page-token", default="", help="from the previous page")

    def rate_control(p: argparse.ArgumentParser) -> None:
        p.add_argument("--max-concurrency", default="", help="targets at once: N or N%% [all]")
        p.add_argument(
            "--max-errors", default="", help="errors before the waiting targets are cancelled"
        )

    def script_source(p: argparse.ArgumentParser, required: bool) -> None:
        group = p.add_mutually_exclusive_group(required=required)
        group.add_argument("--content", help="the script text")
        group.add_argument("--file", help="read the script from this file (- for stdin)")

    commands = sub.add_parser("commands", help="create, list, modify and delete commands")
    csub = commands.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = csub.add_parser("create", help="save a script as a command")
    create.add_argument("--name", required=True)
    create.add_argument("--type", choices=sorted(TYPES), default="shell")
    script_source(create, required=True)
    create.add_argument("--description", default="")
    create.add_argument("-t", "--tag", action="append", help="KEY=VALUE, repeatable")
    create.add_argument("--launcher", default="", help=LAUNCHER_HELP)
    create.add_argument("--working-dir", default="")
    create.add_argument("--timeout", type=int, default=0, help="seconds [server default, 60]")
    create.add_argument(
        "--enable-parameter", action="store_true", help="fill {{name}} placeholders at invocation"
    )
    create.add_argument("--client-token", default="", help="makes retries idempotent")
    create.set_defaults(handler=commands_create)

    listing = csub.add_parser("list", help="list commands, newest first")
    listing.add_argument("--id", default="")
    listing.add_argument("--name", default="", help="names containing this, any case")
    listing.add_argument("--type", choices=sorted(TYPES))
    listing.add_argument("-t", "--tag", action="append", help="KEY=VALUE (empty value: any)")
    paged(listing)
    listing.set_defaults(handler=commands_list)

    modify = csub.add_parser("modify", help="change a command")
    modify.add_argument("command_id")
    modify.add_argument("--name")
    modify.add_argument("--description")
    modify.add_argument("--working-dir")
    modify.add_argument("--timeout", type=int)
    script_source(modify, required=False)
    modify.set_defaults(handler=commands_modify)

    delete = csub.add_parser("delete", help="delete a command")
    delete.add_argument("command_id")
    delete.set_defaults(handler=commands_delete)

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
    rate_control(inv)
    inv.add_argument("--client-token", default="")
    inv.add_argument("--watch", action="store_true", help="print output until it ends")
    inv.set_defaults(handler=invoke)

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

    sf = sub.add_parser("send-file", help="write a file on instances (at most 32 KB)")
    sf.add_argument("-i", "--instance", action="append", help="repeatable")
    sf.add_argument("-t", "--tag", action="append", help="KEY=VALUE: every instance with the tag")
    sf.add_argument("--name", required=True, help="the file's name")
    sf.add_argument("--target-dir", required=True, help="absolute; created when missing")
    script_source(sf, required=True)
    sf.add_argument("--mode", default="", help="octal [0644]")
    sf.add_argument("--owner", default="")
    sf.add_argument("--group", default="")
    sf.add_argument("--overwrite", action="store_true", help="replace a file that is there")
    sf.add_argument("--timeout", type=int, default=0, help="seconds [60]")
    sf.add_argument("--client-token", default="")
    sf.set_defaults(handler=send_file)

    fr = sub.add_parser("file-results", help="per-instance results of send-file, newest first")
    fr.add_argument("invoke_id", nargs="?")
    fr.add_argument("--instance-id", default="")
    paged(fr)
    fr.set_defaults(handler=file_results)

    mi = sub.add_parser(
        "modify-invocation", help="change a periodic invocation's script, parameters or schedule"
    )
    mi.add_argument("invoke_id")
    script_source(mi, required=False)
    mi.add_argument("-p", "--parameter", action="append", help="KEY=VALUE: replaces them all")
    mi.add_argument("--frequency", help="a new schedule: cron, rate(...) or at(...)")
    mi.add_argument("-i", "--instance", action="append", default=[], help="add this instance")
    mi.set_defaults(handler=modify_invocation)

    invs = sub.add_parser("invocations", help="list invocations, newest first")
    invs.add_argument("--id", default="")
    invs.add_argument("--command-id", default="")
    invs.add_argument("--command-name", default="", help="command names containing this, any case")
    invs.add_argument("--instance-id", default="", help="invocations that include it")
    invs.add_argument("--status", choices=sorted(STATUSES))
    paged(invs)
    invs.set_defaults(handler=invocations)

    res = sub.add_parser("results", help="list execution records with exit codes")
    res.add_argument("invoke_id", nargs="?")
    res.add_argument("--instance-id", default="")
    res.add_argument("--command-id", default="")
    res.add_argument("--status", choices=sorted(STATUSES))
    res.add_argument("--history", action="store_true", help="every run of periodic invocations")
    paged(res)
    res.set_defaults(handler=results)

    out = sub.add_parser("output", help="print a record's whole output")
    out.add_argument("invoke_id")
    out.add_argument("-i", "--instance-id", default="")
    out.add_argument("--record-id", default="")
    out.set_defaults(handler=output)

    st = sub.add_parser("stop", help="stop an invocation")
    st.add_argument("invoke_id")
    st.add_argument("-i", "--instance", action="append", default=[], help="[all]")
    st.set_defaults(handler=stop)

    sch = sub.add_parser("schedule", help="the next fire times of a frequency (cron, rate, at)")
    sch.add_argument("frequency", help="as invoke --frequency, e.g. '0 */20 * * * ?'")
    sch.add_argument("-n", "--count", type=int, default=5, help="how many [%(default)s]")
    sch.add_argument("--timeout", type=int, help="the invocation's timeout: a rate must be longer")
    sch.set_defaults(handler=schedule)

    ins = sub.add_parser("instances", help="list instances and whether their agent is online")
    ins.add_argument("-i", "--instance", action="append", default=[])
    ins.add_argument("-t", "--tag", action="append", help="KEY=VALUE (empty value: any)")
    paged(ins)
    ins.set_defaults(handler=instances)

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
    rate_control(rn)
    rn.add_argument("--client-token", default="")
    rn.set_defaults(handler=run)

    wt = sub.add_parser(
        "watch",
        help="print an invocation's output live until it ends",
        description="Stored output first, then live until the invocation ends; the live view "
        "on a terminal, JSON lines with --json (as run prints them).",
        epilog=EXIT_CODES_HELP,
    )
    wt.add_argument("invoke_id")
    wt.set_defaults(handler=watch)

    rg = sub.add_parser(
        "regions", help="the regions holding your instances, commands or invocations"
    )
    rg.set_defaults(handler=regions)

    tg = sub.add_parser("tag", help="set tags on instances")
    tg.add_argument("-i", "--instance", action="append", required=True, help="repeatable")
    tg.add_argument("-t", "--tag", action="append", required=True, help="KEY=VALUE, repeatable")
    tg.set_defaults(handler=tag)

    ut = sub.add_parser("untag", help="remove tags from instances")
    ut.add_argument("-i", "--instance", action="append", required=True, help="repeatable")
    ut.add_argument("-k", "--key", action="append", required=True, help="repeatable")
    ut.set_defaults(handler=untag)

    dr = sub.add_parser("deregister", help="revoke an instance: its agent can no longer connect")
    dr.add_argument("instance_id")
    dr.set_defaults(handler=deregister)

    accounts = sub.add_parser("accounts", help="(admin) create and list accounts")
    asub = accounts.add_subparsers(dest="action", required=True, metavar="ACTION")
    acreate = asub.add_parser("create", help="create an account")
    acreate.add_argument("name")
    acreate.add_argument("--admin", action="store_true", help="may call the admin API")
    acreate.set_defaults(handler=accounts_create)
    alist = asub.add_parser("list", help="list accounts")
    paged(alist)
    alist.set_defaults(handler=accounts_list)

    keys = sub.add_parser("keys", help="(admin) create, list and revoke API keys")
    ksub = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    kcreate = ksub.add_parser("create", help="create a key; prints its token once")
    kcreate.add_argument("--account", default="", help="[your own account]")
    kcreate.add_argument("--description", default="")
    kcreate.set_defaults(handler=keys_create)
    klist = ksub.add_parser("list", help="list keys")
    klist.add_argument("--account", default="", help="[all accounts]")
    paged(klist)
    klist.set_defaults(handler=keys_list)
    krevoke = ksub.add_parser("revoke", help="revoke a key; it stops working at once")
    krevoke.add_argument("key_id")
    krevoke.set_defaults(handler=keys_revoke)

    activations = sub.add_parser("activations", help="(admin) activations agents register with")
    tsub = activations.add_subparsers(dest="action", required=True, metavar="ACTION")
    tcreate = tsub.add_parser(
        "create", help="create an activation (in --region); prints its id and code"
    )
    tcreate.add_argument("--account", default="", help="[your own account]")
    tcreate.add_argument("--description", default="")
    tcreate.add_argument("--max-registrations", type=int, default=1, help="[1]")
    tcreate.add_argument("--expires-in", type=int, default=0, help="seconds [86400]")
    tcreate.set_defaults(handler=activations_create)
    tlist = tsub.add_parser("list", help="list activations")
    paged(tlist)
    tlist.set_defaults(handler=activations_list)

    au = sub.add_parser("audit", help="(admin) who called which mutating RPC, when")
    au.add_argument("--account", default="")
    au.add_argument("--method", default="", help="e.g. /cloudassist.v1.CommandService/RunCommand")
    paged(au)
    au.set_defaults(handler=audit)

    for leaf in completion.leaf_parsers(parser).values():
        # SUPPRESS: not given after the command, the global flag's value stays.
        leaf.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
        )

    comp = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Prints a completion script for the shell, e.g. "
        "`cloudassist completion bash > /etc/bash_completion.d/cloudassist`, "
        "`cloudassist completion zsh > ~/.zfunc/_cloudassist` (a directory in $fpath), "
        "`cloudassist completion fish > ~/.config/fish/completions/cloudassist.fish`.",
    )
    comp.add_argument("shell", choices=completion.SHELLS)
    return parser


def _local_error(error: OSError) -> int:
    """A file the CLI could not read (--file, --ca, ...)."""
    where = f"{error.filename}: " if error.filename else ""
    render.error(f"{where}{error.strerror or error}")
    return EXIT_LOCAL_ERROR


async def _main(args: argparse.Namespace) -> int:
    try:
        client = Client(args)
    except OSError as error:
        return _local_error(error)
    handler: Callable[[Client], Awaitable[int]] = args.handler
    try:
        return await handler(client)
    except aio.AioRpcError as error:
        palette = style.Palette(style.use_color(args.color, sys.stderr.isatty(), os.environ))
        print(render.describe_rpc_error(error, args.server, palette), file=sys.stderr)
        return EXIT_API_ERROR
    except OSError as error:
        return _local_error(error)
    finally:
        await client.channel.close()


def with_absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    """`args` with the files it names (--ca, --file) absolute, against the current directory,
    once, before anything reads them."""
    if args.ca is not None:
        args.ca = args.ca.absolute()
    if getattr(args, "file", None) and args.file != "-":
        args.file = str(Path(args.file).absolute())
    return args


# Arguments that are bytes, not text: scripts (sent as they are) and local file names.
_BYTES_ARGS = frozenset({"script", "content", "file"})


def check_text(args: argparse.Namespace) -> argparse.Namespace:
    """`args`, or a local error naming the first argument the server would take as text that
    is not UTF-8 (what a terminal in another encoding passes), instead of a traceback."""
    for name, value in vars(args).items():
        if name in _BYTES_ARGS:
            continue
        for text in value if isinstance(value, list) else [value]:
            if not isinstance(text, str):
                continue
            try:
                text.encode()
            except UnicodeEncodeError:
                raise SystemExit(
                    f"cloudassist: {name.replace('_', '-')}: {os.fsencode(text)!r} is not UTF-8 "
                    "text (a script may be any bytes: give it as the script or with --file)"
                ) from None
    return args


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = check_text(with_absolute_paths(parser.parse_args(argv)))
    if args.command == "completion":
        sys.stdout.write(completion.script(args.shell, parser))
        return
    if args.command == "run" and not args.script and not args.file:
        parser.error("run: give the script as an argument or with --file")
    try:
        sys.exit(asyncio.run(_main(args)))
    except KeyboardInterrupt:
        sys.exit(EXIT_STOPPED)


if __name__ == "__main__":
    main()
