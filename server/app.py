"""Wires the server together: database, hub, recorder, reaper, scheduler, services, security,
health and reflection, on one listener (or two, when agents get their own)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import ssl
from pathlib import Path
from types import ModuleType
from wsgiref.simple_server import WSGIServer

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from sqlalchemy import make_url

from cloudassist.v1 import admin_pb2, agent_pb2, command_pb2, instance_pb2
from server.admin_key import local_peer, read_key_file
from server.admin_plane import AdminPlane
from server.agent_plane import AgentPlane
from server.api.admin_service import AdminService
from server.api.agent_service import AgentService
from server.api.command_service import CommandService
from server.api.forwarded import BridgeTrust
from server.api.guard import Guard
from server.api.instance_service import InstanceService
from server.api.metrics_interceptor import MetricsInterceptor
from server.api.registration import add_service
from server.auth import Authenticator, RateLimiter
from server.bus import LocalBus, PostgresBus
from server.clock import now_ms
from server.config import ServerConfig
from server.console.listener import ConsoleServer
from server.console.site import AssetsMissing
from server.domain import ids
from server.events import InvocationEvents
from server.exporter import (
    BucketDestination,
    Destination,
    DirectoryDestination,
    OutputExporter,
)
from server.health import HealthReporter
from server.hub import Hub
from server.metrics import Metrics
from server.plane import CommandPlane, PlaneSettings
from server.reaper import Reaper
from server.recorder import Recorder
from server.scheduler import Scheduler
from server.store import servers, stats
from server.store.admin_keys import ProvidedKey, ProvidedKeyError, register_provided_key
from server.store.database import Database
from server.store.engine import is_sqlite
from server.store.schedules import FirePolicy
from server.store.security import bootstrap_admin

log = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin.key"
PRESENCE_SECONDS = 5.0
# A scrape gives up counting records after this (Prometheus times out scrapes at 10 s).
RECORDS_COUNT_TIMEOUT_MS = 5_000
# A server whose heartbeat is older than this is gone; its agents are offline.
PRESENCE_STALE_MS = 20_000


def _service(module: ModuleType, name: str) -> ServiceDescriptor:
    service: ServiceDescriptor = module.DESCRIPTOR.services_by_name[name]
    return service


COMMAND_SERVICE = _service(command_pb2, "CommandService")
INSTANCE_SERVICE = _service(instance_pb2, "InstanceService")
ADMIN_SERVICE = _service(admin_pb2, "AdminService")
AGENT_SERVICE = _service(agent_pb2, "AgentService")
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class ConfigError(Exception):
    """The configuration cannot be served safely (e.g. plaintext on a public address)."""


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    options = [
        ("grpc.keepalive_time_ms", config.keepalive_seconds * 1000),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_seconds * 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Let clients ping as often as every 10 s without being cut off.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    if config.max_connection_age_seconds:
        age_grace = config.max_connection_age_grace_seconds
        grace = config.shutdown_grace_seconds if age_grace is None else float(age_grace)
        options += [
            ("grpc.max_connection_age_ms", config.max_connection_age_seconds * 1000),
            ("grpc.max_connection_age_grace_ms", int(grace * 1000)),
        ]
    return options


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


class ServerApp:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._check_transport()
        self.destinations = self._output_destinations()
        self.provided_key = self._provided_key()
        self.db = Database.open(config.database_url)
        self.server_id = ids.new_id("s")
        self.metrics = Metrics()
        self.events = InvocationEvents()
        self.hub = Hub(self.events)
        self.metrics.count_agents_with(self.hub.online_count)
        self.metrics.count_records_with(self._records_by_state)
        self.metrics.count_transactions_in(self.db.transactions)
        self.recorder = Recorder(self.db, self.hub, metrics=self.metrics)
        self.reaper = Reaper(self.db, self.hub)
        self.plane = CommandPlane(
            self.db,
            self.hub,
            PlaneSettings(
                limits=config.limits,
                default_timezone=config.default_timezone,
                delivery_timeout_seconds=config.delivery_timeout_seconds,
                stop_grace_seconds=config.stop_grace_seconds,
                output_grace_seconds=config.output_grace_seconds,
            ),
        )
        self.agent_plane = AgentPlane(self.db, self.hub, self.recorder, self.server_id)
        if is_sqlite(config.database_url):
            self.hub.bus = LocalBus()
        else:
            self.hub.bus = PostgresBus(
                psycopg_dsn(config.database_url),
                self.server_id,
                on_dispatch=self.agent_plane.redispatch,
                on_cancel=self.hub.deliver_cancels,
                on_changed=self.events.notify,
                on_resync=self._resync,
            )
        self.authenticator = Authenticator(self.db)
        self.admin_plane = AdminPlane(self.db, self.authenticator)
        self.scheduler = Scheduler(
            self.db,
            self.hub,
            FirePolicy(
                late_grace_ms=int(config.schedule_grace_seconds * 1000),
                delivery_timeout_ms=int(config.delivery_timeout_seconds * 1000),
                output_limit=config.limits.output_bytes_per_record,
                schedule_for=self.plane.schedule_for,
                new_record_id=ids.record_id,
            ),
        )
        self.plane.schedules_changed = self.scheduler.wake
        self.health = HealthServicer()
        interceptors = [MetricsInterceptor(self.metrics)]
        self.server = aio.server(options=grpc_options(config), interceptors=interceptors)
        self.agent_server = (
            aio.server(options=grpc_options(config), interceptors=interceptors)
            if config.agent_listen
            else None
        )
        self.reporter: HealthReporter | None = None
        self.metrics_port = 0
        self._metrics_server: WSGIServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0
        self.agent_port = 0
        self.console: ConsoleServer | None = None
        self.console_port = 0

    def _check_transport(self) -> None:
        config = self.config
        for address in filter(None, (config.listen, config.agent_listen, config.console_listen)):
            if config.tls_cert is None and not is_loopback(address) and not config.insecure:
                raise ConfigError(
                    f"refusing plaintext on {address}, which is not a loopback address: give "
                    "--tls-cert and --tls-key, or --insecure to accept the risk"
                )
        if (config.tls_cert is None) != (config.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if config.agent_ca is not None and (config.tls_cert is None or not config.agent_listen):
            raise ConfigError("--agent-ca needs --tls-cert, --tls-key and --agent-listen")

    def _provided_key(self) -> tuple[str, str] | None:
        """The admin key of --admin-key-file, checked before anything starts."""
        if self.config.admin_key_file is None:
            return None
        try:
            return read_key_file(self.config.admin_key_file)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def _output_destinations(self) -> list[Destination]:
        config = self.config
        destinations: list[Destination] = []
        if config.output_dir is not None:
            destinations.append(DirectoryDestination(config.output_dir))
        if config.output_bucket:
            try:
                destinations.append(
                    BucketDestination(config.output_bucket, config.output_s3_endpoint)
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        return destinations

    def _credentials(self, agents: bool) -> grpc.ServerCredentials | None:
        config = self.config
        if config.tls_cert is None or config.tls_key is None:
            return None
        pair = [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
        if agents and config.agent_ca is not None:
            return grpc.ssl_server_credentials(
                pair, root_certificates=config.agent_ca.read_bytes(), require_client_auth=True
            )
        return grpc.ssl_server_credentials(pair)

    def _listen(self, server: aio.Server, address: str, agents: bool) -> int:
        credentials = self._credentials(agents)
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError:  # grpcio's "Failed to bind to address"
            port = 0
        if port == 0:
            raise ConfigError(f"cannot listen on {address}")
        return port

    async def _bootstrap(self) -> None:
        if self.provided_key is not None:
            await self._register_provided_key(*self.provided_key)
            return
        token = await self.db.write(bootstrap_admin, now_ms())
        if token is None:
            return
        path = self.config.data_dir / ADMIN_KEY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        log.warning("created the admin account; its API key is in %s (mode 0600)", path)

    async def _register_provided_key(self, key_id: str, secret: str) -> None:
        """The key of --admin-key-file becomes the admin's (once, whichever server starts
        first); no admin.key is written."""
        path = self.config.admin_key_file
        try:
            done = await self.db.write(
                register_provided_key, key_id, secret, now_ms(), local_peer()
            )
        except ProvidedKeyError as exc:
            raise ConfigError(f"--admin-key-file {path}: {exc}") from exc
        if done is ProvidedKey.REVOKED:
            log.warning("the admin key %s of %s: %s", key_id, path, done.value)
        else:
            log.info("the admin key %s of %s: %s", key_id, path, done.value)

    def _records_by_state(self) -> dict[str, int]:
        """Called on the metrics server's thread, which may block."""
        with self.db.engine.begin() as conn:
            return stats.records_by_state(conn, RECORDS_COUNT_TIMEOUT_MS)

    async def _resync(self) -> None:
        """Notifications may have been missed: look at the rows again."""
        await self.agent_plane.redispatch()
        self.events.notify_all()

    async def _presence(self) -> None:
        """Heartbeat of this server; agents of servers that stopped beating go offline, and so
        do instances marked online here without a session."""
        while True:
            try:
                await self.db.write(servers.heartbeat, self.server_id, self.config.listen, now_ms())
                await self.db.write(servers.sweep, now_ms(), PRESENCE_STALE_MS)
                await self.agent_plane.reconcile_presence()
            except Exception:
                log.exception("server heartbeat failed; retrying")
            await asyncio.sleep(PRESENCE_SECONDS)

    async def start(self) -> int:
        await self.db.write(servers.heartbeat, self.server_id, self.config.listen, now_ms())
        await self.db.write(servers.sweep, now_ms(), PRESENCE_STALE_MS)
        await self._bootstrap()
        await self.hub.bus.start()
        limiter = RateLimiter(self.config.rate_limit, self.config.rate_burst)
        # The console's bridge names the browser behind each call it forwards.
        bridge = BridgeTrust() if self.config.console_listen else None
        tenant = Guard(self.authenticator, limiter, self.admin_plane.record, bridge=bridge)
        admin = Guard(
            self.authenticator, limiter, self.admin_plane.record, admin_only=True, bridge=bridge
        )
        commands = CommandService(self.plane, self.config.limits, self.config.default_timezone)
        add_service(self.server, commands, COMMAND_SERVICE, tenant)
        add_service(self.server, InstanceService(self.plane), INSTANCE_SERVICE, tenant)
        add_service(self.server, AdminService(self.admin_plane), ADMIN_SERVICE, admin)
        agent_service = AgentService(
            self.agent_plane,
            self.config.limits,
            self.config.heartbeat_seconds,
            bind_certificates=self.config.agent_ca is not None,
            metrics=self.metrics,
        )
        agent_host = self.agent_server or self.server
        add_service(agent_host, agent_service, AGENT_SERVICE)
        served = [COMMAND_SERVICE, INSTANCE_SERVICE, ADMIN_SERVICE]
        if self.agent_server is None:
            served.append(AGENT_SERVICE)
        else:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.agent_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*(s.full_name for s in served), HEALTH_NAME, reflection.SERVICE_NAME], self.server
        )
        # Before serving anything: a bad --metrics-listen stops the server before it starts.
        if self.config.metrics_listen:
            try:
                self._metrics_server, _, self.metrics_port = self.metrics.serve(
                    self.config.metrics_listen
                )
            except OSError as exc:
                raise ConfigError(
                    f"--metrics-listen {self.config.metrics_listen}: cannot listen: "
                    f"{exc.strerror or exc}"
                ) from exc
            except ValueError as exc:
                raise ConfigError(
                    f"--metrics-listen {self.config.metrics_listen}: expected HOST:PORT"
                ) from exc
        self.port = self._listen(self.server, self.config.listen, agents=self.agent_server is None)
        if self.agent_server is not None:
            self.agent_port = self._listen(self.agent_server, self.config.agent_listen, agents=True)
            await self.agent_server.start()
        else:
            self.agent_port = self.port
        if bridge is not None:
            self._bind_console(bridge)
        await self.server.start()
        if self.console is not None:
            await self.console.start()
        self._tasks = [
            asyncio.create_task(self.recorder.run(), name="recorder"),
            asyncio.create_task(self.reaper.run(), name="reaper"),
            asyncio.create_task(self.scheduler.run(), name="scheduler"),
            asyncio.create_task(self._presence(), name="presence"),
            asyncio.create_task(
                self.hub.keepalive(self.config.heartbeat_seconds), name="agent-keepalive"
            ),
        ]
        if self.destinations:
            exporter = OutputExporter(
                self.db, self.destinations, grace_seconds=self.config.output_grace_seconds
            )
            self._tasks.append(asyncio.create_task(exporter.run(), name="output-exporter"))
        self.reporter = HealthReporter(
            self.health, [s.full_name for s in (*served, AGENT_SERVICE)], self.metrics
        )
        await self.reporter.start()
        self._tasks.append(
            asyncio.create_task(
                self.reporter.watch_database(self.db.engine, self.config.health_interval_seconds),
                name="health",
            )
        )
        if self.config.ready_file is not None:
            tmp = self.config.ready_file.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "port": self.port,
                        "agent_port": self.agent_port,
                        "metrics_port": self.metrics_port,
                        "console_port": self.console_port,
                        "pid": os.getpid(),
                    }
                )
            )
            tmp.replace(self.config.ready_file)
        log.info(
            "serving on port %d%s (database %s)",
            self.port,
            f", agents on port {self.agent_port}" if self.agent_server else "",
            _redacted(self.config.database_url),
        )
        if self.console is not None:
            scheme = "https" if self.config.tls_cert else "http"
            log.info(
                "console on %s://%s/",
                scheme,
                _with_port(self.config.console_listen, self.console_port),
            )
        return self.port

    def _bind_console(self, bridge: BridgeTrust) -> None:
        """The console's listener, and the private socket its bridge reaches the gRPC server
        through (plaintext: only this process's user can open it)."""
        config = self.config
        tls: ssl.SSLContext | None = None
        if config.tls_cert is not None and config.tls_key is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(config.tls_cert, config.tls_key)
        self.console = ConsoleServer(
            config.console_listen,
            [COMMAND_SERVICE, INSTANCE_SERVICE, ADMIN_SERVICE],
            bridge,
            tls,
            config.max_message_bytes,
        )
        try:
            self.console_port = self.console.bind()
        except OSError as exc:
            raise ConfigError(
                f"--console-listen {config.console_listen}: cannot listen: {exc.strerror or exc}"
            ) from exc
        except AssetsMissing as exc:
            raise ConfigError(f"--console-listen: {exc}; build them with `make console`") from exc
        except ValueError as exc:
            raise ConfigError(
                f"--console-listen {config.console_listen}: expected HOST:PORT"
            ) from exc
        self.server.add_insecure_port(self.console.grpc_address)

    async def stop(self) -> None:
        """Graceful drain: NOT_SERVING, agents told to reconnect, output flushed, then stop."""
        if self.reporter is not None:
            await self.reporter.drain()
        else:
            await self.health.enter_graceful_shutdown()
        if self.config.drain_delay_seconds:
            # Still answering, NOT_SERVING: load balancers that poll Health/Check see it and
            # stop sending calls before the listeners close.
            log.info("NOT_SERVING for %.1f s before closing", self.config.drain_delay_seconds)
            await asyncio.sleep(self.config.drain_delay_seconds)
        self.hub.drain("server shutting down")
        if self.console is not None:
            await self.console.stop()
        grace = self.config.shutdown_grace_seconds
        listeners = [s for s in (self.server, self.agent_server) if s is not None]
        await asyncio.gather(*(s.stop(grace) for s in listeners))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.recorder.flush(), grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.hub.bus.stop()
        with contextlib.suppress(Exception):
            await self.db.write(servers.leave, self.server_id)
        self.db.close()
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.shutdown)
            self._metrics_server.server_close()
        log.info("stopped")


def _with_port(address: str, port: int) -> str:
    """HOST:PORT with the port actually bound (for an address given with port 0)."""
    return f"{address.rpartition(':')[0]}:{port}"


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def psycopg_dsn(url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
