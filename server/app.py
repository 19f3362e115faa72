"""Wires the server together: database, hub, recorder, planes, services, security, health and
reflection; starts the listeners (server/listeners.py) and the background jobs, and stops them
in the order that drains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from types import ModuleType

from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from sqlalchemy import make_url

from cloudassist.common.clock import now_ms
from cloudassist.server.admin_key import local_peer, read_key_file
from cloudassist.server.api.admin_service import AdminService
from cloudassist.server.api.agent_service import AgentService
from cloudassist.server.api.command_service import CommandService
from cloudassist.server.api.forwarded import BridgeTrust
from cloudassist.server.api.guard import Guard
from cloudassist.server.api.instance_service import InstanceService
from cloudassist.server.api.metrics_interceptor import MetricsInterceptor
from cloudassist.server.api.registration import add_service
from cloudassist.server.auth import Authenticator, RateLimiter
from cloudassist.server.config import ServerConfig
from cloudassist.server.domain import ids
from cloudassist.server.fleet.bus import LocalBus, PostgresBus
from cloudassist.server.fleet.events import InvocationEvents
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.fleet.recorder import Recorder
from cloudassist.server.jobs.collector import OldGenerationCollector
from cloudassist.server.jobs.exporter import (
    BucketDestination,
    Destination,
    DirectoryDestination,
    OutputExporter,
)
from cloudassist.server.jobs.health import HealthReporter
from cloudassist.server.jobs.presence import Presence
from cloudassist.server.jobs.reaper import Reaper
from cloudassist.server.jobs.runner import Jobs
from cloudassist.server.jobs.scheduler import Scheduler
from cloudassist.server.listeners import ConfigError, Listeners, check_transport
from cloudassist.server.metrics import Metrics
from cloudassist.server.planes.admin import AdminPlane
from cloudassist.server.planes.agents import AgentPlane
from cloudassist.server.planes.changes import ChangePlane
from cloudassist.server.planes.commands import CommandPlane
from cloudassist.server.planes.instances import InstancePlane
from cloudassist.server.planes.invocations import InvocationPlane
from cloudassist.server.planes.results import ResultPlane
from cloudassist.server.planes.shared import PlaneSettings, Schedules
from cloudassist.server.planes.watch import WatchPlane
from cloudassist.server.store import servers, stats
from cloudassist.server.store.admin_keys import ProvidedKey, ProvidedKeyError, register_provided_key
from cloudassist.server.store.database import Database
from cloudassist.server.store.engine import is_sqlite
from cloudassist.server.store.schedules import FirePolicy
from cloudassist.server.store.security import bootstrap_admin
from cloudassist.v1 import admin_pb2, agent_pb2, command_pb2, instance_pb2

log = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin.key"
# A scrape gives up counting records after this (Prometheus times out scrapes at 10 s).
RECORDS_COUNT_TIMEOUT_MS = 5_000


def _service(module: ModuleType, name: str) -> ServiceDescriptor:
    service: ServiceDescriptor = module.DESCRIPTOR.services_by_name[name]
    return service


COMMAND_SERVICE = _service(command_pb2, "CommandService")
INSTANCE_SERVICE = _service(instance_pb2, "InstanceService")
ADMIN_SERVICE = _service(admin_pb2, "AdminService")
AGENT_SERVICE = _service(agent_pb2, "AgentService")
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class ServerApp:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        check_transport(config)
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
        settings = PlaneSettings(
            limits=config.limits,
            default_timezone=config.default_timezone,
            delivery_timeout_seconds=config.delivery_timeout_seconds,
            stop_grace_seconds=config.stop_grace_seconds,
            output_grace_seconds=config.output_grace_seconds,
        )
        self.schedules = Schedules(config.default_timezone)
        self.command_plane = CommandPlane(self.db, config.limits)
        self.invocation_plane = InvocationPlane(self.db, self.hub, settings, self.schedules)
        self.change_plane = ChangePlane(self.db, self.hub, settings, self.schedules)
        self.result_plane = ResultPlane(self.db, config.limits)
        self.watch_plane = WatchPlane(self.db, self.hub, settings)
        self.instance_plane = InstancePlane(self.db, self.hub, config.limits)
        self.agent_plane = AgentPlane(self.db, self.hub, self.recorder, self.server_id)
        # Checked keys are cached while the bus would tell of their revocation.
        self.authenticator = Authenticator(self.db, epoch=lambda: self.hub.bus.epoch())
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
                on_revoked=self.authenticator.forget_keys,
            )
        self.admin_plane = AdminPlane(self.db, self.authenticator)
        self.scheduler = Scheduler(
            self.db,
            self.hub,
            FirePolicy(
                late_grace_ms=int(config.schedule_grace_seconds * 1000),
                delivery_timeout_ms=int(config.delivery_timeout_seconds * 1000),
                output_limit=config.limits.output_bytes_per_record,
                schedule_for=self.schedules.schedule_for,
                new_record_id=ids.record_id,
            ),
        )
        self.schedules.changed = self.scheduler.wake
        self.presence = Presence(
            self.db, self.server_id, config.listen, self.agent_plane.reconcile_presence
        )
        self.health = HealthServicer()
        self.listeners = Listeners(config, [MetricsInterceptor(self.metrics)])
        self.reporter: HealthReporter | None = None
        self.jobs = Jobs()

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

    def _add_services(self, bridge: BridgeTrust | None) -> list[ServiceDescriptor]:
        """The services behind their guards, health and reflection; returns the services
        served to clients (the agents' one aside)."""
        config = self.config
        server, agent_server = self.listeners.server, self.listeners.agent_server
        limiter = RateLimiter(config.rate_limit, config.rate_burst)
        record = self.admin_plane.record
        tenant = Guard(self.authenticator, limiter, record, bridge=bridge)
        admin = Guard(self.authenticator, limiter, record, admin_only=True, bridge=bridge)
        commands = CommandService(
            self.command_plane,
            self.invocation_plane,
            self.change_plane,
            self.result_plane,
            self.watch_plane,
        )
        add_service(server, commands, COMMAND_SERVICE, tenant)
        add_service(server, InstanceService(self.instance_plane), INSTANCE_SERVICE, tenant)
        add_service(server, AdminService(self.admin_plane), ADMIN_SERVICE, admin)
        agent_service = AgentService(
            self.agent_plane,
            config.limits,
            config.heartbeat_seconds,
            bind_certificates=config.agent_ca is not None,
            metrics=self.metrics,
        )
        add_service(self.listeners.agent_host, agent_service, AGENT_SERVICE)
        served = [COMMAND_SERVICE, INSTANCE_SERVICE, ADMIN_SERVICE]
        if agent_server is None:
            served.append(AGENT_SERVICE)
        else:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, agent_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*(s.full_name for s in served), HEALTH_NAME, reflection.SERVICE_NAME], server
        )
        return served

    def _start_jobs(self) -> None:
        self.jobs.start("recorder", self.recorder.run())
        self.jobs.start("reaper", self.reaper.run())
        self.jobs.start("scheduler", self.scheduler.run())
        self.jobs.start("presence", self.presence.run())
        self.jobs.start("agent-keepalive", self.hub.keepalive(self.config.heartbeat_seconds))
        self.jobs.start("garbage-collector", OldGenerationCollector().run())
        if self.destinations:
            exporter = OutputExporter(
                self.db, self.destinations, grace_seconds=self.config.output_grace_seconds
            )
            self.jobs.start("output-exporter", exporter.run())

    async def start(self) -> int:
        await self.presence.beat()
        await self._bootstrap()
        await self.hub.bus.start()
        # The console's bridge names the browser behind each call it forwards.
        bridge = BridgeTrust() if self.config.console_listen else None
        served = self._add_services(bridge)
        self.listeners.serve_metrics(self.metrics)
        await self.listeners.open(bridge, [COMMAND_SERVICE, INSTANCE_SERVICE, ADMIN_SERVICE])
        self._start_jobs()
        self.reporter = HealthReporter(
            self.health, [s.full_name for s in (*served, AGENT_SERVICE)], self.metrics
        )
        await self.reporter.start()
        self.jobs.start(
            "health",
            self.reporter.watch_database(self.db.engine, self.config.health_interval_seconds),
        )
        self.listeners.write_ready_file()
        listeners = self.listeners
        log.info(
            "serving on port %d%s (database %s)",
            listeners.port,
            f", agents on port {listeners.agent_port}" if listeners.agent_server else "",
            _redacted(self.config.database_url),
        )
        if listeners.console is not None:
            log.info("console on %s", listeners.console_url())
        return listeners.port

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
        grace = self.config.shutdown_grace_seconds
        await self.listeners.close(grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.recorder.flush(), grace)
        await self.jobs.stop()
        await self.hub.bus.stop()
        with contextlib.suppress(Exception):
            await self.db.write(servers.leave, self.server_id)
        self.db.close()
        await self.listeners.close_metrics()
        log.info("stopped")


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def psycopg_dsn(url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
