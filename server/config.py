"""Server configuration: command-line flags, each with an environment variable fallback."""

from __future__ import annotations

import argparse
import importlib.metadata
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from pathlib import Path

from cloudassist.common.flags import EnvDefaults
from cloudassist.common.logs import LOG_FORMATS
from cloudassist.server.domain.limits import Limits
from cloudassist.server.domain.timezones import parse_timezone
from cloudassist.server.store.engine import absolute_database_url

ENV_PREFIX = "CLOUDASSIST_"
_env = EnvDefaults(ENV_PREFIX)


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    data_dir: Path = Path("var")
    # Where finished records' output is copied (None: nowhere).
    output_dir: Path | None = None
    output_bucket: str = ""  # s3://BUCKET/PREFIX
    output_s3_endpoint: str = ""  # an S3-compatible service's URL; empty: AWS
    db_url: str = ""
    default_timezone: tzinfo = field(default_factory=lambda: parse_timezone("UTC+08:00"))
    limits: Limits = field(default_factory=Limits)
    delivery_timeout_seconds: float = 60.0
    stop_grace_seconds: float = 15.0
    output_grace_seconds: float = 10.0
    # A scheduled fire found later than this (the server was down) is skipped.
    schedule_grace_seconds: float = 2.0
    heartbeat_seconds: int = 20
    keepalive_seconds: int = 30
    keepalive_timeout_seconds: int = 20
    max_connection_age_seconds: int = 0
    # How long a connection past its age gets to finish its calls; None: --shutdown-grace.
    max_connection_age_grace_seconds: int | None = None
    shutdown_grace_seconds: float = 10.0
    # On SIGTERM: NOT_SERVING but still answering for this long, then the drain.
    drain_delay_seconds: float = 0.0
    ready_file: Path | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    # host:port for Prometheus metrics (/metrics); empty: none.
    metrics_listen: str = ""
    # host:port for the web console (assets and gRPC-Web); empty: none.
    console_listen: str = ""
    # Seconds between database checks behind the health service.
    health_interval_seconds: float = 5.0
    # Agents on their own listener (required for mTLS); empty: the main listener.
    agent_listen: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # CA that agent client certificates must chain to; the certificate's CN is the instance id.
    agent_ca: Path | None = None
    # The bootstrap admin key, from a file the operator provides (a Kubernetes Secret, ...).
    admin_key_file: Path | None = None
    insecure: bool = False
    rate_limit: float = 100.0
    rate_burst: float = 200.0
    max_message_bytes: int = 8 * 1024 * 1024

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'cloudassist.db'}"


def with_absolute_paths(config: ServerConfig) -> ServerConfig:
    """`config` with every path it holds absolute, against the current directory: resolved
    once, at start-up, so that nothing later depends on the process's current directory."""

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else path.absolute()

    return replace(
        config,
        data_dir=config.data_dir.absolute(),
        output_dir=absolute(config.output_dir),
        db_url=absolute_database_url(config.db_url),
        ready_file=absolute(config.ready_file),
        tls_cert=absolute(config.tls_cert),
        tls_key=absolute(config.tls_key),
        agent_ca=absolute(config.agent_ca),
        admin_key_file=absolute(config.admin_key_file),
    )


def _timezone(text: str) -> tzinfo:
    try:
        return parse_timezone(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


_LIMIT_FLAGS: list[tuple[str, str, str]] = [
    ("max-commands-per-region", "commands_per_region", "commands kept per region"),
    ("max-invocations-per-day", "invocations_per_region_per_day", "invocations per region per day"),
    ("max-instances-per-invocation", "instances_per_invocation", "instances in one invocation"),
    ("max-content-bytes", "content_bytes", "Base64 script plus parameters, in bytes"),
    ("max-parameters", "parameters_per_command", "custom parameters per command"),
    ("default-timeout", "default_timeout_seconds", "timeout when a command sets none, seconds"),
    ("min-timeout", "min_timeout_seconds", "smallest timeout accepted, seconds"),
    ("max-timeout", "max_timeout_seconds", "largest timeout accepted, seconds"),
    ("max-env-vars", "env_vars", "environment variables per invocation"),
    ("max-env-bytes", "env_bytes", "environment variable names plus values, in bytes"),
    (
        "max-agent-connects-per-second",
        "agent_connects_per_second",
        "agent hellos admitted a second",
    ),
    ("max-agent-connects-in-flight", "agent_connects_in_flight", "agent hellos stored at once"),
    (
        "max-output-bytes",
        "output_bytes_per_record",
        "output stored per record; the rest is dropped",
    ),
]


def _add_logging_flags(parser: argparse.ArgumentParser, defaults: ServerConfig) -> None:
    parser.add_argument(
        "--log-level",
        default=_env.get("log-level", defaults.log_level),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="[%(default)s]",
    )
    parser.add_argument(
        "--log-format",
        default=_env.get("log-format", defaults.log_format),
        choices=LOG_FORMATS,
        help="text, or json: one object per line with invoke_id, instance_id, ... fields "
        "[%(default)s]",
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = ServerConfig()
    limits = Limits()
    parser = argparse.ArgumentParser(
        prog="cloudassist-server",
        description="The cloudassist gRPC server: command API, agent streams, deadlines. "
        "Every flag can also be set with an environment variable CLOUDASSIST_<FLAG> "
        "(e.g. CLOUDASSIST_LISTEN). `cloudassist-server migrate [--show] "
        "[--db URL | --data-dir DIR]` upgrades (or shows) the database schema instead; "
        "`cloudassist-server admin-key [--db URL | --data-dir DIR] [--output FILE]` issues a "
        "new admin API key.",
    )
    add = parser.add_argument
    add(
        "--version",
        action="version",
        version=f"%(prog)s {importlib.metadata.version('cloudassist')}",
    )
    add(
        "--listen",
        default=_env.get("listen", defaults.listen),
        help="host:port to serve on (port 0 picks a free port) [%(default)s]",
    )
    add(
        "--data-dir",
        type=Path,
        default=Path(_env.get("data-dir", str(defaults.data_dir))),
        help="directory for the SQLite database and other state [%(default)s]",
    )
    add(
        "--output-dir",
        type=Path,
        default=_env.path("output-dir"),
        help="copy every finished record's output (and a JSON summary) here [off]",
    )
    add(
        "--output-bucket",
        default=_env.get("output-bucket", ""),
        metavar="s3://BUCKET/PREFIX",
        help="copy every finished record's output (and a JSON summary) to this bucket [off]",
    )
    add(
        "--output-s3-endpoint",
        default=_env.get("output-s3-endpoint", ""),
        metavar="URL",
        help="the S3-compatible service of --output-bucket (MinIO, ...) [AWS]",
    )
    add(
        "--db",
        default=_env.get("db", ""),
        help="SQLAlchemy database URL, e.g. "
        "sqlite:///path/cloudassist.db or postgresql+psycopg://user@host/db "
        "[sqlite:///DATA_DIR/cloudassist.db]",
    )
    add(
        "--default-timezone",
        type=_timezone,
        default=_env.get("default-timezone", "UTC+08:00"),
        help="time zone for schedules without one and for the daily quota: an IANA name or "
        "UTC+HH:MM [%(default)s]",
    )
    add(
        "--delivery-timeout",
        type=float,
        default=float(_env.get("delivery-timeout", str(defaults.delivery_timeout_seconds))),
        help="seconds a task may wait for its agent before it is ABORTED [%(default)s]",
    )
    add(
        "--stop-grace",
        type=float,
        default=float(_env.get("stop-grace", str(defaults.stop_grace_seconds))),
        help="seconds to wait for an agent to confirm a stop before the record is "
        "TERMINATED anyway [%(default)s]",
    )
    add(
        "--heartbeat-interval",
        type=int,
        default=int(_env.get("heartbeat-interval", str(defaults.heartbeat_seconds))),
        help="seconds between heartbeats on agent streams [%(default)s]",
    )
    add(
        "--keepalive",
        type=int,
        default=int(_env.get("keepalive", str(defaults.keepalive_seconds))),
        help="seconds between HTTP/2 keepalive pings [%(default)s]",
    )
    add(
        "--keepalive-timeout",
        type=int,
        default=int(_env.get("keepalive-timeout", str(defaults.keepalive_timeout_seconds))),
        help="seconds to wait for a keepalive ping's answer before closing [%(default)s]",
    )
    add(
        "--max-connection-age",
        type=int,
        default=int(_env.get("max-connection-age", str(defaults.max_connection_age_seconds))),
        help="close connections after this many seconds so agents rebalance; 0: never "
        "[%(default)s]",
    )
    add(
        "--max-connection-age-grace",
        type=int,
        default=int(_env.get("max-connection-age-grace", "-1")),
        help="seconds a connection past --max-connection-age gets to finish its calls; "
        "-1: --shutdown-grace [%(default)s]",
    )
    add(
        "--drain-delay",
        type=float,
        default=float(_env.get("drain-delay", str(defaults.drain_delay_seconds))),
        help="seconds to keep answering (NOT_SERVING) after SIGTERM before the drain starts, "
        "for load balancers that poll health checks [%(default)s]",
    )
    add(
        "--shutdown-grace",
        type=float,
        default=float(_env.get("shutdown-grace", str(defaults.shutdown_grace_seconds))),
        help="seconds in-flight calls get to finish on SIGTERM [%(default)s]",
    )
    add(
        "--ready-file",
        type=Path,
        default=_env.get("ready-file", "") or None,
        help='write {"port": N, "pid": N} here once serving',
    )
    add(
        "--agent-listen",
        default=_env.get("agent-listen", ""),
        help="serve AgentService on its own host:port (needed for --agent-ca); default: on "
        "--listen",
    )
    add(
        "--tls-cert",
        type=Path,
        default=_env.get("tls-cert", "") or None,
        help="PEM certificate (chain) for TLS on both listeners",
    )
    add(
        "--tls-key",
        type=Path,
        default=_env.get("tls-key", "") or None,
        help="PEM private key of --tls-cert",
    )
    add(
        "--agent-ca",
        type=Path,
        default=_env.get("agent-ca", "") or None,
        help="PEM CA bundle: agents must present a certificate it signed, whose common name "
        "is their instance id (mTLS, on --agent-listen)",
    )
    add(
        "--admin-key-file",
        type=Path,
        default=_env.path("admin-key-file"),
        metavar="FILE",
        help="the admin API key '<key id>.<secret>' from this file (e.g. a mounted secret) "
        "instead of a generated admin.key: registered for the admin account at start-up, so "
        "that every server given the same file accepts it",
    )
    add(
        "--insecure",
        action="store_true",
        default=_env.get("insecure", "") == "1",
        help="allow plaintext on an address that is not loopback",
    )
    add(
        "--rate-limit",
        type=float,
        default=float(_env.get("rate-limit", str(defaults.rate_limit))),
        help="requests a second per account; 0: no limit [%(default)s]",
    )
    add(
        "--rate-burst",
        type=float,
        default=float(_env.get("rate-burst", str(defaults.rate_burst))),
        help="requests an account may make at once before --rate-limit applies [%(default)s]",
    )
    add(
        "--max-message-bytes",
        type=int,
        default=int(_env.get("max-message-bytes", str(defaults.max_message_bytes))),
        help="largest gRPC message accepted or sent [%(default)s]",
    )
    _add_logging_flags(parser, defaults)
    add(
        "--metrics-listen",
        default=_env.get("metrics-listen", defaults.metrics_listen),
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics [off]",
    )
    add(
        "--console-listen",
        default=_env.get("console-listen", defaults.console_listen),
        metavar="HOST:PORT",
        help="serve the web console on http(s)://HOST:PORT/ (TLS with --tls-cert; plaintext "
        "only on loopback unless --insecure) [off]",
    )
    add(
        "--health-interval",
        type=float,
        default=float(_env.get("health-interval", str(defaults.health_interval_seconds))),
        help="seconds between the database checks behind grpc.health.v1: NOT_SERVING while "
        "the database does not answer [%(default)s]",
    )
    for flag, attribute, text in _LIMIT_FLAGS:
        add(
            f"--{flag}",
            type=int,
            dest=attribute,
            metavar="N",
            default=int(_env.get(flag, str(getattr(limits, attribute)))),
            help=f"{text} [%(default)s]",
        )
    return parser


def add_database_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a subcommand that works on the server's database: --data-dir and --db
    (with the server's environment variables), and the logging flags."""
    defaults = ServerConfig()
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(_env.get("data-dir", str(defaults.data_dir))),
        help="the server's data directory, for its SQLite database [%(default)s]",
    )
    parser.add_argument(
        "--db", default=_env.get("db", ""), help="SQLAlchemy database URL [the SQLite database]"
    )
    _add_logging_flags(parser, defaults)


def database_config(args: argparse.Namespace) -> ServerConfig:
    """The config of the flags `add_database_flags` added, its paths absolute."""
    config = ServerConfig(
        data_dir=args.data_dir,
        db_url=args.db,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    return with_absolute_paths(config)


def parse_migrate_config(argv: list[str]) -> tuple[ServerConfig, bool]:
    """`cloudassist-server migrate`'s flags: the database the server would use (same flags and
    environment variables), and --show. Returns the config and whether to only show."""
    parser = argparse.ArgumentParser(
        prog="cloudassist-server migrate",
        description="Upgrades the database schema to this server's revision (a new database "
        "gets the whole schema). Back up the database first. The flags and environment "
        "variables name the database as they do for the server.",
    )
    parser.add_argument(
        "--show", action="store_true", help="print the revisions; exit 0 only when current"
    )
    add_database_flags(parser)
    args = parser.parse_args(argv)
    return database_config(args), args.show


def parse_config(argv: list[str] | None = None) -> ServerConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        limits = Limits(**{attribute: getattr(args, attribute) for _, attribute, _ in _LIMIT_FLAGS})
    except ValueError as exc:
        parser.error(str(exc))
    default_timezone = args.default_timezone
    if isinstance(default_timezone, str):
        default_timezone = _timezone(default_timezone)
    config = ServerConfig(
        listen=args.listen,
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        output_bucket=args.output_bucket,
        output_s3_endpoint=args.output_s3_endpoint,
        db_url=args.db,
        default_timezone=default_timezone,
        limits=limits,
        delivery_timeout_seconds=args.delivery_timeout,
        stop_grace_seconds=args.stop_grace,
        heartbeat_seconds=args.heartbeat_interval,
        keepalive_seconds=args.keepalive,
        keepalive_timeout_seconds=args.keepalive_timeout,
        max_connection_age_seconds=args.max_connection_age,
        max_connection_age_grace_seconds=(
            None if args.max_connection_age_grace < 0 else args.max_connection_age_grace
        ),
        shutdown_grace_seconds=args.shutdown_grace,
        drain_delay_seconds=args.drain_delay,
        ready_file=args.ready_file,
        log_level=args.log_level,
        log_format=args.log_format,
        metrics_listen=args.metrics_listen,
        console_listen=args.console_listen,
        health_interval_seconds=args.health_interval,
        agent_listen=args.agent_listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        agent_ca=args.agent_ca,
        admin_key_file=args.admin_key_file,
        insecure=args.insecure,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        max_message_bytes=args.max_message_bytes,
    )
    return with_absolute_paths(config)
