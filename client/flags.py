"""The CLI's flags: the groups several commands share, turning flag values into request fields,
and the checks every command line gets before anything is sent."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TypeAlias

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import tag_pb2

# What each command module adds its commands to.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

TYPES = {
    "shell": pb.COMMAND_TYPE_RUN_SHELL_SCRIPT,
    "bat": pb.COMMAND_TYPE_RUN_BAT_SCRIPT,
    "powershell": pb.COMMAND_TYPE_RUN_POWERSHELL_SCRIPT,
}
LAUNCHER_HELP = "run the script with this, e.g. 'python3 -u {{ACS::ScriptFile}}'"


# Flag groups ----------------------------------------------------------------------------


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


# Flag values as request fields ----------------------------------------------------------


def content(args: argparse.Namespace) -> bytes | None:
    """The bytes of --file (- for stdin) or --content, None when neither was given."""
    if getattr(args, "file", None):
        return Path(args.file).read_bytes() if args.file != "-" else sys.stdin.buffer.read()
    if getattr(args, "content", None) is not None:
        # The bytes the shell passed: os.fsencode undoes how Python decoded argv.
        return os.fsencode(str(args.content))
    return None


def _pairs(pairs: list[str] | None, flag: str) -> dict[str, str]:
    result = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"cloudassist: {flag} takes KEY=VALUE, not {pair!r}")
        result[key] = value
    return result


def parameters(pairs: list[str] | None) -> dict[str, str]:
    return _pairs(pairs, "--parameter")


def env(pairs: list[str] | None) -> dict[str, str]:
    return _pairs(pairs, "--env")


def tags(pairs: list[str] | None) -> list[tag_pb2.Tag]:
    return [tag_pb2.Tag(key=k, value=v) for k, v in _pairs(pairs, "--tag").items()]


def targets(args: argparse.Namespace) -> tuple[list[str], list[tag_pb2.Tag]]:
    """Instances named with -i, or selected with --tag: one of the two."""
    if bool(args.instance) == bool(args.tag):
        raise SystemExit("cloudassist: give the instances with -i ID or --tag KEY=VALUE")
    return list(args.instance or []), tags(args.tag)


# Checks of the whole command line -------------------------------------------------------


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
