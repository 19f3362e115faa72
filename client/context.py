"""What every command of the CLI gets: the parsed arguments, the connection's service stubs,
the colours, and the two ways a command prints an answer. Also the CLI's exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from cloudassist.client import auth, render, style
from cloudassist.client.follow import EXIT_NOT_RUN, EXIT_STOPPED, EXIT_TIMEOUT
from cloudassist.v1 import admin_pb2_grpc, command_pb2_grpc, instance_pb2_grpc

T = TypeVar("T")

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


class Client:
    """One command's run: its arguments, a channel to the server and its three services."""

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

    def done(self, response: Message, *words: object) -> int:
        """With --json, the response; else `words` (the ids a script wants) on one line, or
        nothing for calls that answer nothing but success."""
        render.print_ids(response, *words, as_json=self.args.json)
        return EXIT_OK

    def listing(
        self, response: Message, items: Sequence[T], columns: Sequence[render.Column[T]]
    ) -> int:
        """A list response: JSON with --json, else a table of `items` (see
        render.print_listing)."""
        render.print_listing(response, items, columns, self.palette, as_json=self.args.json)
        return EXIT_OK


# A command: what `set_defaults(handler=...)` names; it returns the exit code.
Handler = Callable[[Client], Awaitable[int]]
