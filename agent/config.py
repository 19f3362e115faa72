"""Agent configuration: command-line flags with environment variable fallbacks."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from cloudassist.common.flags import EnvDefaults

# The agent ships in the server's distribution: it logs the way the server does.
from cloudassist.common.logs import LOG_FORMATS

ENV_PREFIX = "CLOUDASSIST_AGENT_"
_env = EnvDefaults(ENV_PREFIX)


def default_state_dir() -> Path:
    if os.name == "posix" and os.geteuid() == 0:
        return Path("/var/lib/cloudassist-agent")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "cloudassist-agent"


@dataclass(frozen=True)
class AgentConfig:
    server: str = "127.0.0.1:50051"
    instance_id: str = ""
    region_id: str = "cn-hangzhou"
    state_dir: Path = Path("state")
    activation_id: str = ""
    activation_code: str = ""
    # TLS: the CA that signed the server's certificate; a client certificate for mTLS.
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    kill_grace_seconds: float = 5.0
    max_backoff_seconds: float = 30.0
    log_level: str = "INFO"
    # "text" or "json" (one object per line, for a log pipeline).
    log_format: str = "text"
    # Reported in every hello; the server lets tags set through its API win.
    tags: dict[str, str] = field(default_factory=dict)
    # Where the machine's boot id is read (it changes at every boot).
    boot_id_file: Path = Path("/proc/sys/kernel/random/boot_id")
    # The pwsh that runs PowerShell scripts; empty: PowerShell is not run here.
    powershell: str = ""


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.strip().partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a tag is KEY=VALUE, not {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    defaults = AgentConfig()
    parser = argparse.ArgumentParser(
        prog="cloudassist-agent",
        description="The cloudassist agent: keeps one stream open to the server and runs the "
        "scripts it is sent. Every flag can also be set with an environment variable "
        "CLOUDASSIST_AGENT_<FLAG> (e.g. CLOUDASSIST_AGENT_SERVER).",
    )
    add = parser.add_argument
    add(
        "--version",
        action="version",
        version=f"%(prog)s {importlib.metadata.version('cloudassist')}",
    )
    add(
        "--server",
        default=_env.get("server", defaults.server),
        help="host:port of the cloudassist server; several, comma-separated, are tried in turn "
        "on each reconnect [%(default)s]",
    )
    add(
        "--instance-id",
        default=_env.get("instance-id", ""),
        help="the instance id to register as; default: one the server picks. After "
        "registration, the id saved in the state directory is used",
    )
    add(
        "--region",
        dest="region_id",
        default=_env.get("region", defaults.region_id),
        help="the region this instance belongs to; registration fails when the activation "
        "is for another region [%(default)s]",
    )
    add(
        "--state-dir",
        type=Path,
        default=Path(_env.get("state-dir", str(default_state_dir()))),
        help="where the instance's credentials, unacknowledged output and results are kept "
        "[%(default)s]",
    )
    add(
        "--activation-id",
        default=_env.get("activation-id", ""),
        help="register with this activation; needed once, until the state directory holds "
        "the instance's credentials",
    )
    add("--activation-code", default=_env.get("activation-code", ""), help="the activation's code")
    add(
        "--ca",
        type=Path,
        default=_env.path("ca"),
        help="connect with TLS, trusting this PEM CA bundle for the server's certificate",
    )
    add(
        "--cert",
        type=Path,
        default=_env.path("cert"),
        help="PEM client certificate for mTLS (its common name is the instance id)",
    )
    add("--key", type=Path, default=_env.path("key"), help="PEM private key of --cert")
    add(
        "--kill-grace",
        type=float,
        default=float(_env.get("kill-grace", str(defaults.kill_grace_seconds))),
        help="seconds between SIGTERM and SIGKILL when a task is stopped [%(default)s]",
    )
    add(
        "--max-backoff",
        type=float,
        default=float(_env.get("max-backoff", str(defaults.max_backoff_seconds))),
        help="longest wait between reconnect attempts, seconds [%(default)s]",
    )
    add(
        "--tag",
        action="append",
        type=_tag,
        default=[_tag(t) for t in _env.get("tags", "").split(",") if t.strip()],
        metavar="KEY=VALUE",
        help="a tag of this instance, repeatable (CLOUDASSIST_AGENT_TAGS: comma-separated)",
    )
    add(
        "--powershell",
        default=_env.get("powershell", ""),
        metavar="PWSH",
        help="run PowerShell scripts with this pwsh (a name on PATH or a path) [off]",
    )
    add(
        "--boot-id-file",
        type=Path,
        default=Path(_env.get("boot-id-file", str(defaults.boot_id_file))),
        help="the file that holds this boot's id; reboot-mode invocations run when it "
        "changes [%(default)s]",
    )
    add(
        "--log-level",
        default=_env.get("log-level", defaults.log_level),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="[%(default)s]",
    )
    add(
        "--log-format",
        default=_env.get("log-format", defaults.log_format),
        choices=LOG_FORMATS,
        help="text, or json: one object per line, ids as fields [%(default)s]",
    )
    return parser  # fmt: skip


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.absolute()


def program_path(program: str) -> str:
    """A program given as a path (it has a slash), absolute; a bare name stays one (PATH)."""
    return str(Path(program).absolute()) if os.sep in program else program


def with_absolute_paths(config: AgentConfig) -> AgentConfig:
    """`config` with every path it holds absolute, against the current directory: the agent
    resolves them once, at start-up, so that nothing later depends on its current directory
    (its scripts start elsewhere, in their working directory or their user's home)."""
    return replace(
        config,
        state_dir=config.state_dir.absolute(),
        ca=_absolute(config.ca),
        cert=_absolute(config.cert),
        key=_absolute(config.key),
        boot_id_file=config.boot_id_file.absolute(),
        powershell=program_path(config.powershell),
    )


def parse_config(argv: list[str] | None = None) -> AgentConfig:
    """The agent's configuration from its flags and environment, every path absolute."""
    args = build_parser().parse_args(argv)
    config = AgentConfig(
        server=args.server,
        instance_id=args.instance_id,
        region_id=args.region_id,
        state_dir=args.state_dir,
        activation_id=args.activation_id,
        activation_code=args.activation_code,
        ca=args.ca,
        cert=args.cert,
        key=args.key,
        kill_grace_seconds=args.kill_grace,
        max_backoff_seconds=args.max_backoff,
        log_level=args.log_level,
        log_format=args.log_format,
        tags=dict(args.tag),
        boot_id_file=args.boot_id_file,
        powershell=args.powershell,
    )
    return with_absolute_paths(config)
