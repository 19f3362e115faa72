"""The CLI's argparse tree: the global flags, then each command as its group's module adds it.
Shell completion is generated from this tree too."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
from collections.abc import Callable
from pathlib import Path

from cloudassist.client import (
    admin,
    auth,
    commands,
    completion,
    files,
    instances,
    invocations,
    running,
    style,
)
from cloudassist.client.context import EXIT_CODES_HELP
from cloudassist.client.flags import Subparsers

# Every command, in the order `cloudassist --help` and completion list them.
COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    commands.add_commands,
    invocations.add_invoke,
    invocations.add_rerun,
    files.add_send_file,
    files.add_file_results,
    invocations.add_modify_invocation,
    invocations.add_invocations,
    invocations.add_results,
    invocations.add_output,
    invocations.add_stop,
    invocations.add_schedule,
    instances.add_instances,
    running.add_run,
    running.add_watch,
    instances.add_regions,
    instances.add_tag,
    instances.add_untag,
    instances.add_deregister,
    admin.add_accounts,
    admin.add_keys,
    admin.add_activations,
    admin.add_audit,
)


def _add_global_flags(parser: argparse.ArgumentParser) -> None:
    """Flags given before the command; the config file's values are their defaults."""
    config = auth.load_config()
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudassist",
        description="Run scripts on machines through a cloudassist server. Settings come from "
        "flags, then environment variables, then the config file "
        f"({auth.config_path()}; TOML with server, region, api_key, ca).",
        epilog=EXIT_CODES_HELP,
    )
    _add_global_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)

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
