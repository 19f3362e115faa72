"""`cloudassist commands create|list|modify|delete`: saved commands."""

from __future__ import annotations

from cloudassist.client import flags, render
from cloudassist.client.context import Client
from cloudassist.client.flags import LAUNCHER_HELP, TYPES
from cloudassist.v1 import command_pb2 as pb


async def commands_create(c: Client) -> int:
    a = c.args
    content = flags.content(a)
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
            tags=flags.tags(a.tag),
            launcher=a.launcher,
        )
    )
    return c.done(response, response.command_id)


async def commands_list(c: Client) -> int:
    a = c.args
    request = pb.DescribeCommandsRequest(
        region_id=c.region,
        command_id=a.id,
        name=a.name,
        type=TYPES[a.type] if a.type else pb.COMMAND_TYPE_UNSPECIFIED,
        page_size=a.page_size,
        page_token=a.page_token,
        tags=flags.tags(a.tag),
    )
    response = await c.commands.DescribeCommands(request)
    return c.listing(
        response,
        response.commands,
        [
            ("COMMAND_ID", lambda cmd: cmd.command_id),
            ("NAME", lambda cmd: cmd.name),
            ("TYPE", lambda cmd: render.enum_suffix(pb.CommandType.Name(cmd.type))),
            ("TIMEOUT", lambda cmd: cmd.timeout_seconds),
            ("PARAMETERS", lambda cmd: ",".join(cmd.parameter_names) or "-"),
            ("INVOKED", lambda cmd: cmd.invoke_times),
            ("CREATED", lambda cmd: render.when(cmd.creation_time)),
        ],
    )


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
    content = flags.content(a)
    if content is not None:
        request.command_content = content
    return c.done(await c.commands.ModifyCommand(request))


async def commands_delete(c: Client) -> int:
    response = await c.commands.DeleteCommand(
        pb.DeleteCommandRequest(region_id=c.region, command_id=c.args.command_id)
    )
    return c.done(response)


def add_commands(sub: flags.Subparsers) -> None:
    commands = sub.add_parser("commands", help="create, list, modify and delete commands")
    csub = commands.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = csub.add_parser("create", help="save a script as a command")
    create.add_argument("--name", required=True)
    create.add_argument("--type", choices=sorted(TYPES), default="shell")
    flags.script_source(create, required=True)
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
    flags.paged(listing)
    listing.set_defaults(handler=commands_list)

    modify = csub.add_parser("modify", help="change a command")
    modify.add_argument("command_id")
    modify.add_argument("--name")
    modify.add_argument("--description")
    modify.add_argument("--working-dir")
    modify.add_argument("--timeout", type=int)
    flags.script_source(modify, required=False)
    modify.set_defaults(handler=commands_modify)

    delete = csub.add_parser("delete", help="delete a command")
    delete.add_argument("command_id")
    delete.set_defaults(handler=commands_delete)
