"""The server's sockets: TLS credentials, the gRPC listener (and the agents' own with
--agent-listen), the console's listener and the private socket its bridge calls through, the
metrics endpoint, and the ready file that publishes their ports."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import ssl
from collections.abc import Sequence
from wsgiref.simple_server import WSGIServer

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio

from cloudassist.server.api.forwarded import BridgeTrust
from cloudassist.server.config import ServerConfig
from cloudassist.server.console.listener import ConsoleServer
from cloudassist.server.console.site import AssetsMissing
from cloudassist.server.metrics import Metrics

# Calls the transport holds for the event loop before it refuses some (gRPC's default: 1,000,
# and all past 3,000).
PENDING_CALLS = 100_000
# Seconds a call may wait there before the transport cancels it (gRPC's default: 30), which a
# fleet of 50,000 reconnecting at once outlasts while the loop takes the calls one by one.
PENDING_SECONDS = 600


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
        # Calls wait in the transport until the event loop takes them; past these counts it
        # refuses them (RESOURCE_EXHAUSTED, which a client still writing reads as INTERNAL).
        # A reconnecting fleet must not be refused there: the agent service admits hellos at
        # its pace and tells the others when to come back (domain/admission.py).
        ("grpc.server.max_pending_requests", PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", 2 * PENDING_CALLS),
        ("grpc.server_max_unrequested_time_in_server", PENDING_SECONDS),
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


def check_transport(config: ServerConfig) -> None:
    """ConfigError unless every listener is TLS or loopback (or --insecure), and the TLS flags
    come in the combinations that make sense."""
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


def server_credentials(config: ServerConfig, agents: bool) -> grpc.ServerCredentials | None:
    """None for plaintext; with --agent-ca, the agents' listener requires client certificates."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    pair = [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())]
    if agents and config.agent_ca is not None:
        return grpc.ssl_server_credentials(
            pair, root_certificates=config.agent_ca.read_bytes(), require_client_auth=True
        )
    return grpc.ssl_server_credentials(pair)


def with_port(address: str, port: int) -> str:
    """HOST:PORT with the port actually bound (for an address given with port 0)."""
    return f"{address.rpartition(':')[0]}:{port}"


class Listeners:
    """The gRPC servers are made at once (services are added to them before they listen);
    `serve_metrics` and `open` bind the ports, `close` and `close_metrics` release them."""

    def __init__(self, config: ServerConfig, interceptors: Sequence[aio.ServerInterceptor]) -> None:
        self.config = config
        self.server = aio.server(options=grpc_options(config), interceptors=interceptors)
        self.agent_server = (
            aio.server(options=grpc_options(config), interceptors=interceptors)
            if config.agent_listen
            else None
        )
        self.port = 0
        self.agent_port = 0
        self.console: ConsoleServer | None = None
        self.console_port = 0
        self.metrics_port = 0
        self._metrics_server: WSGIServer | None = None

    @property
    def agent_host(self) -> aio.Server:
        """The gRPC server the agents' service is on."""
        return self.agent_server or self.server

    def serve_metrics(self, metrics: Metrics) -> None:
        """Before serving anything: a bad --metrics-listen stops the server before it starts."""
        address = self.config.metrics_listen
        if not address:
            return
        try:
            self._metrics_server, _, self.metrics_port = metrics.serve(address)
        except OSError as exc:
            raise ConfigError(
                f"--metrics-listen {address}: cannot listen: {exc.strerror or exc}"
            ) from exc
        except ValueError as exc:
            raise ConfigError(f"--metrics-listen {address}: expected HOST:PORT") from exc

    async def open(
        self, bridge: BridgeTrust | None, console_services: Sequence[ServiceDescriptor]
    ) -> None:
        """Binds the gRPC ports and, given the console's bridge, the console's; then serves."""
        config = self.config
        self.port = self._listen(self.server, config.listen, agents=self.agent_server is None)
        if self.agent_server is not None:
            self.agent_port = self._listen(self.agent_server, config.agent_listen, agents=True)
            await self.agent_server.start()
        else:
            self.agent_port = self.port
        if bridge is not None:
            self._bind_console(bridge, console_services)
        await self.server.start()
        if self.console is not None:
            await self.console.start()

    def _listen(self, server: aio.Server, address: str, agents: bool) -> int:
        credentials = server_credentials(self.config, agents)
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

    def _bind_console(self, bridge: BridgeTrust, services: Sequence[ServiceDescriptor]) -> None:
        """The console's listener, and the private socket its bridge reaches the gRPC server
        through (plaintext: only this process's user can open it)."""
        config = self.config
        tls: ssl.SSLContext | None = None
        if config.tls_cert is not None and config.tls_key is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(config.tls_cert, config.tls_key)
        self.console = ConsoleServer(
            config.console_listen, services, bridge, tls, config.max_message_bytes
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

    def console_url(self) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{with_port(self.config.console_listen, self.console_port)}/"

    def write_ready_file(self) -> None:
        """The bound ports and the pid as JSON in --ready-file, replaced in one rename."""
        if self.config.ready_file is None:
            return
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

    async def close(self, grace: float) -> None:
        """The console first, then the gRPC servers, whose calls get `grace` seconds."""
        if self.console is not None:
            await self.console.stop()
        servers = [s for s in (self.server, self.agent_server) if s is not None]
        await asyncio.gather(*(s.stop(grace) for s in servers))

    async def close_metrics(self) -> None:
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.shutdown)
            self._metrics_server.server_close()
