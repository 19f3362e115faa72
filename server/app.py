"""Wires the server together: database, hub, recorder, reaper, services, health, reflection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from types import ModuleType

from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from cloudassist.v1 import agent_pb2, command_pb2, instance_pb2
from server.agent_plane import AgentPlane
from server.api.agent_service import AgentService
from server.api.command_service import CommandService
from server.api.instance_service import InstanceService
from server.api.registration import add_service
from server.config import ServerConfig
from server.domain import ids
from server.events import InvocationEvents
from server.hub import Hub
from server.plane import CommandPlane, PlaneSettings
from server.reaper import Reaper
from server.recorder import Recorder
from server.scheduler import Scheduler
from server.store.agents import mark_all_offline
from server.store.database import Database
from server.store.schedules import FirePolicy

log = logging.getLogger(__name__)


def _service(module: ModuleType, name: str) -> ServiceDescriptor:
    service: ServiceDescriptor = module.DESCRIPTOR.services_by_name[name]
    return service


SERVICE_NAMES = [
    _service(command_pb2, "CommandService").full_name,
    _service(instance_pb2, "InstanceService").full_name,
    _service(agent_pb2, "AgentService").full_name,
]


def grpc_options(config: ServerConfig) -> list[tuple[str, int]]:
    options = [
        ("grpc.keepalive_time_ms", config.keepalive_seconds * 1000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Let clients ping as often as every 10 s without being cut off.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ]
    if config.max_connection_age_seconds:
        options += [
            ("grpc.max_connection_age_ms", config.max_connection_age_seconds * 1000),
            ("grpc.max_connection_age_grace_ms", int(config.shutdown_grace_seconds * 1000)),
        ]
    return options


class ServerApp:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.db = Database.open(config.database_url)
        self.events = InvocationEvents()
        self.hub = Hub(self.events)
        self.recorder = Recorder(self.db, self.hub)
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
        self.agent_plane = AgentPlane(self.db, self.hub, self.recorder)
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
        self.health = HealthServicer()
        self.server = aio.server(options=grpc_options(config))
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0

    async def start(self) -> int:
        await self.db.write(mark_all_offline)
        add_service(
            self.server, CommandService(self.plane), _service(command_pb2, "CommandService")
        )
        add_service(
            self.server, InstanceService(self.plane), _service(instance_pb2, "InstanceService")
        )
        add_service(
            self.server,
            AgentService(self.agent_plane, self.config.limits, self.config.heartbeat_seconds),
            _service(agent_pb2, "AgentService"),
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                *SERVICE_NAMES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.port = self.server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {self.config.listen}")
        await self.server.start()
        self._tasks = [
            asyncio.create_task(self.recorder.run(), name="recorder"),
            asyncio.create_task(self.reaper.run(), name="reaper"),
            asyncio.create_task(self.scheduler.run(), name="scheduler"),
        ]
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.config.ready_file is not None:
            tmp = self.config.ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"port": self.port, "pid": os.getpid()}))
            tmp.replace(self.config.ready_file)
        log.info("serving on port %d (database %s)", self.port, _redacted(self.config.database_url))
        return self.port

    async def stop(self) -> None:
        """Graceful drain: NOT_SERVING, agents told to reconnect, output flushed, then stop."""
        await self.health.enter_graceful_shutdown()
        self.hub.drain("server shutting down")
        await self.server.stop(self.config.shutdown_grace_seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.recorder.flush(), self.config.shutdown_grace_seconds)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.db.close()
        log.info("stopped")


def _redacted(url: str) -> str:
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)
