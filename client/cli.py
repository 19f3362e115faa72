"""`cloudassist`: the command-line client. It mirrors the API, plus `run` for one-off scripts.

Defaults reach a local server (127.0.0.1:50051, region cn-hangzhou); --server/--region or the
environment variables CLOUDASSIST_SERVER and CLOUDASSIST_REGION override them. This module
parses the command line and runs the command's handler; client/parser.py builds the parser and
each group of commands lives in its own module.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from grpc import aio

from cloudassist.client import completion, render, style
from cloudassist.client.context import EXIT_API_ERROR, EXIT_LOCAL_ERROR, Client, Handler
from cloudassist.client.flags import check_text, with_absolute_paths
from cloudassist.client.follow import EXIT_STOPPED
from cloudassist.client.parser import build_parser


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
    handler: Handler = args.handler
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
