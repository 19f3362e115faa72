"""The console's listener: the HTTP(S) server on --console-listen, and the private Unix socket
its bridge reaches the gRPC server through."""

from __future__ import annotations

import shutil
import socket
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path

from aiohttp import web
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio

from cloudassist.server.api.forwarded import BridgeTrust
from cloudassist.server.console.bridge import Bridge
from cloudassist.server.console.site import load_assets, make_app

# Streams still open when the server stops (browsers watching output) are cut after this.
SHUTDOWN_SECONDS = 1.0


def split_address(address: str) -> tuple[str, int]:
    """HOST:PORT or [IPV6]:PORT; ValueError otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class ConsoleServer:
    def __init__(
        self,
        address: str,
        services: Iterable[ServiceDescriptor],
        trust: BridgeTrust,
        ssl_context: ssl.SSLContext | None,
        max_message_bytes: int,
    ) -> None:
        self._address = address
        self._services = list(services)
        self._trust = trust
        self._ssl_context = ssl_context
        self._max_message_bytes = max_message_bytes
        self._socket_dir: Path | None = None
        self.grpc_address = ""
        self._socket: socket.socket | None = None
        self._assets: dict[str, tuple[bytes, str]] = {}
        self._channel: aio.Channel | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def bind(self) -> int:
        """Binds the listening socket (before anything is served, so that a bad address
        stops the server at start), and reads the assets. OSError or ValueError when it
        cannot listen, AssetsMissing without assets."""
        self._assets = load_assets()
        host, port = split_address(self._address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, reuse_port=False)
        self.port = int(self._socket.getsockname()[1])
        # Only this process's user may reach the bridge's socket: mkdtemp makes it 0700.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="cloudassist-console-"))
        self.grpc_address = f"unix:{self._socket_dir / 'grpc.sock'}"
        return self.port

    async def start(self) -> None:
        """Serves on the bound socket; the gRPC server must be serving grpc_address by now."""
        assert self._socket is not None, "bind() first"
        self._channel = aio.insecure_channel(
            self.grpc_address,
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.max_send_message_length", self._max_message_bytes),
            ],
        )
        bridge = Bridge(self._channel, self._services, self._trust)
        # Handler cancellation: a browser that goes away cancels its call's handler, which
        # cancels the upstream call (a watch of output would otherwise run on, unseen).
        self._runner = web.AppRunner(
            make_app(bridge, self._assets),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_SECONDS,
        )
        await self._runner.setup()
        site = web.SockSite(self._runner, self._socket, ssl_context=self._ssl_context)
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._channel is not None:
            await self._channel.close()
        if self._socket is not None:
            self._socket.close()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
