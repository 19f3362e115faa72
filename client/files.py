"""Files: `send-file` (write a file on instances) and `file-results` (how each went)."""

from __future__ import annotations

from cloudassist.client import flags, render
from cloudassist.client.context import Client
from cloudassist.client.style import paint_state
from cloudassist.v1 import command_pb2 as pb


async def send_file(c: Client) -> int:
    a = c.args
    instance_ids, resource_tags = flags.targets(a)
    content = flags.content(a) or b""
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
    return c.done(response, response.invoke_id)


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
    p = c.palette
    return c.listing(
        response,
        response.results,
        [
            ("INVOKE_ID", lambda r: r.invoke_id),
            ("INSTANCE_ID", lambda r: r.instance_id),
            ("FILE", lambda r: f"{r.target_dir.rstrip('/')}/{r.name}"),
            (
                "STATE",
                lambda r: paint_state(p, render.enum_suffix(pb.ExecutionState.Name(r.state))),
            ),
            ("ERROR", lambda r: r.error_code),
            ("FINISHED", lambda r: render.when(r.finish_time)),
        ],
    )


def add_send_file(sub: flags.Subparsers) -> None:
    sf = sub.add_parser("send-file", help="write a file on instances (at most 32 KB)")
    sf.add_argument("-i", "--instance", action="append", help="repeatable")
    sf.add_argument("-t", "--tag", action="append", help="KEY=VALUE: every instance with the tag")
    sf.add_argument("--name", required=True, help="the file's name")
    sf.add_argument("--target-dir", required=True, help="absolute; created when missing")
    flags.script_source(sf, required=True)
    sf.add_argument("--mode", default="", help="octal [0644]")
    sf.add_argument("--owner", default="")
    sf.add_argument("--group", default="")
    sf.add_argument("--overwrite", action="store_true", help="replace a file that is there")
    sf.add_argument("--timeout", type=int, default=0, help="seconds [60]")
    sf.add_argument("--client-token", default="")
    sf.set_defaults(handler=send_file)


def add_file_results(sub: flags.Subparsers) -> None:
    fr = sub.add_parser("file-results", help="per-instance results of send-file, newest first")
    fr.add_argument("invoke_id", nargs="?")
    fr.add_argument("--instance-id", default="")
    flags.paged(fr)
    fr.set_defaults(handler=file_results)
