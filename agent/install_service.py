"""`cloudassist-agent install-service [--unit-dir DIR] [--env-file FILE] [--no-start] FLAGS…`:
installs the agent as a systemd service. The unit comes from UNIT_TEMPLATE (the one source of
deploy/systemd/cloudassist-agent.service); the agent flags given go to an environment file
(mode 0600: it holds the activation code) that the unit reads. Runs before any event loop."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from cloudassist.agent.config import ENV_PREFIX, build_parser, program_path
from cloudassist.common.flags import variable

UNIT_NAME = "cloudassist-agent.service"
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_ENV_FILE = Path("/etc/default/cloudassist-agent")
# Where deploy/systemd/cloudassist-agent.service expects the agent: a virtualenv in /opt.
PACKAGED_AGENT = Path("/opt/cloudassist/bin/cloudassist-agent")

UNIT_TEMPLATE = """\
# cloudassist-agent as a systemd service, as `cloudassist-agent install-service FLAGS…` writes
# it (with its own path in ExecStart; this is it for an agent installed in /opt/cloudassist).
#
# Every flag comes from an environment variable CLOUDASSIST_AGENT_<FLAG>
# (cloudassist-agent --help): the defaults below, overridden by the EnvironmentFile, which
# install-service writes from FLAGS (mode 0600: it holds the activation code).
[Unit]
Description=cloudassist agent (runs the scripts its cloudassist server sends)
Wants=network-online.target
After=network-online.target
# An agent never gives up: it keeps retrying through network and server outages.
StartLimitIntervalSec=0

[Service]
Type=exec
# Root, so that scripts can run as the user an invocation names (uid, gid, groups). No
# NoNewPrivileges= or sandboxing either: every script would inherit it (no sudo, read-only
# /usr, ...), and running scripts on this machine is the agent's job.
StateDirectory=cloudassist-agent
StateDirectoryMode=0700
Environment=CLOUDASSIST_AGENT_STATE_DIR=/var/lib/cloudassist-agent
EnvironmentFile=-{env_file}
ExecStart={agent}
Restart=on-failure
RestartSec=5s

# Stopping: on SIGTERM the agent stops its running scripts itself (SIGTERM to each one's
# processes, SIGKILL after --kill-grace), keeps their output to report them ClientRestarted,
# and exits. KillMode=process leaves alone what a script started to outlive it (a daemon), as
# the agent does when a script ends. TimeoutStopSec must exceed --kill-grace (5 s).
KillMode=process
TimeoutStopSec=30s
# Scripts may start many processes; they all count against the unit's limit.
TasksMax=infinity

[Install]
WantedBy=multi-user.target
"""

# What a unit file and an environment file take without quoting (systemd expands % and $).
_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]*")


def render_unit(agent: Path, env_file: Path) -> str:
    """The unit that runs `agent` with the flags in `env_file`."""
    for path in (agent, env_file):
        if not path.is_absolute() or not _PLAIN.fullmatch(str(path)):
            raise ValueError(f"{path}: a unit needs an absolute path without spaces, % or $")
    return UNIT_TEMPLATE.format(agent=agent, env_file=env_file)


def running_agent() -> Path:
    """This cloudassist-agent's path (the console script being run), for ExecStart."""
    invoked = Path(sys.argv[0])
    if invoked.name == "cloudassist-agent" and invoked.is_file():
        return invoked.absolute()
    return Path(sysconfig.get_path("scripts")) / "cloudassist-agent"


def _variable(action: argparse.Action) -> str:
    flag = next(o for o in action.option_strings if o.startswith("--"))[2:]
    # The agent reads its repeatable --tag from one comma-separated variable.
    name = "tags" if flag == "tag" else flag
    return variable(ENV_PREFIX, name)


def _text(value: object) -> str:
    if isinstance(value, list):  # --tag: (key, value) pairs
        pairs = [f"{k}={v}" for k, v in value]
        if any("," in pair for pair in pairs):
            raise ValueError("a tag written to the environment file cannot contain ','")
        return ",".join(pairs)
    if isinstance(value, Path):  # the service's working directory is /
        return str(value.absolute())
    return str(value)


def agent_environment(flags: list[str]) -> dict[str, str]:
    """The environment variables that give the agent `flags`: only the flags given, so that
    the agent's own defaults (and later versions' defaults) apply to the rest."""
    parser = build_parser()
    # argparse has no public list of a parser's options.
    actions = [a for a in parser._actions if a.dest not in ("help", "version")]
    for action in actions:
        action.default = argparse.SUPPRESS
    given = vars(parser.parse_args(flags))
    if "powershell" in given:  # a path to pwsh, like the Path flags, is made absolute
        given["powershell"] = program_path(given["powershell"])
    return {_variable(a): _text(given[a.dest]) for a in actions if a.dest in given}


def _quoted(name: str, value: str) -> str:
    """`value` as systemd reads it from an environment file."""
    if "\n" in value or "\0" in value:
        raise ValueError(f"{name}: a newline or NUL cannot go to the environment file")
    if _PLAIN.fullmatch(value):
        return value
    if "'" not in value:
        return f"'{value}'"  # verbatim
    return '"' + re.sub(r'([\\"`$])', r"\\\1", value) + '"'


def render_env_file(environment: dict[str, str]) -> str:
    lines = [
        "# cloudassist-agent's flags, written by `cloudassist-agent install-service` (mode 0600:",
        "# it may hold the activation code). Every flag has one: cloudassist-agent --help.",
        *(f"{name}={_quoted(name, value)}" for name, value in sorted(environment.items())),
    ]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, mode: int) -> None:
    """Writes `path` whole, with `mode` from the start: a temporary file renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # an old temporary file keeps its mode otherwise
        with os.fdopen(fd, "w") as out:
            fd = -1
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
    finally:
        if fd >= 0:
            os.close(fd)
    tmp.replace(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudassist-agent install-service",
        description="Install the agent as a systemd service: write its unit and an environment "
        "file with the agent flags given, then `systemctl daemon-reload`, `systemctl enable` "
        "and `systemctl restart` it.",
        epilog="Every other flag is the agent's (cloudassist-agent --help), e.g. --server, "
        "--instance-id, --region, --activation-id, --activation-code.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--unit-dir",
        type=Path,
        default=DEFAULT_UNIT_DIR,
        help=f"where {UNIT_NAME} is written [%(default)s]",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=DEFAULT_ENV_FILE,
        help="where the agent flags are written, mode 0600 [%(default)s]",
    )
    parser.add_argument(
        "--no-start",
        action="store_true",
        help="only write the files: no systemctl (it then needs daemon-reload, enable --now)",
    )
    return parser


def _systemctl(*args: str) -> None:
    try:
        subprocess.run(["systemctl", *args], check=True)
    except FileNotFoundError as exc:
        raise OSError("systemctl not found: not a systemd machine? (--no-start)") from exc
    except subprocess.CalledProcessError as exc:
        raise OSError(f"systemctl {' '.join(args)} failed ({exc.returncode})") from exc


def install_service(argv: list[str]) -> int:
    options, flags = _parser().parse_known_args(argv)
    try:
        env_file = options.env_file.absolute()
        unit = render_unit(running_agent(), env_file)
        environment = agent_environment(flags)
        env_text = render_env_file(environment)
    except ValueError as error:
        sys.exit(f"cloudassist-agent install-service: {error}")
    unit_path = options.unit_dir / UNIT_NAME
    try:
        _write(env_file, env_text, 0o600)
        _write(unit_path, unit, 0o644)
        print(f"wrote {unit_path} and {env_file}")
        if not options.no_start:
            _systemctl("daemon-reload")
            _systemctl("enable", UNIT_NAME)
            # restart, not start: a reinstall's new flags apply to an agent already running.
            _systemctl("restart", UNIT_NAME)
            print(f"{UNIT_NAME} enabled and started")
        else:
            print(f"to start it: systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")
    except OSError as error:
        sys.exit(f"cloudassist-agent install-service: {error}")
    return 0


if __name__ == "__main__":
    # The unit in deploy/systemd/:
    # python -m cloudassist.agent.install_service > cloudassist-agent.service
    sys.stdout.write(render_unit(PACKAGED_AGENT, DEFAULT_ENV_FILE))
