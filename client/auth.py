"""API keys for gRPC clients: where the CLI finds one, and interceptors that send it."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

ENV_KEY = "CLOUDASSIST_API_KEY"
ENV_CONFIG = "CLOUDASSIST_CONFIG"
# What `make run` (and any server started with --data-dir var) writes on first start.
LOCAL_ADMIN_KEY = Path("var") / "admin.key"


def config_path() -> Path:
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cloudassist" / "config.toml"


def load_config() -> dict[str, Any]:
    """`server`, `region`, `api_key`, `ca` from the config file (TOML), if there is one. A
    relative `ca` is relative to the config file's directory (not to wherever the CLI runs)."""
    path = config_path()
    if not path.is_file():
        return {}
    with path.open("rb") as source:
        config = tomllib.load(source)
    if isinstance(config.get("ca"), str) and config["ca"]:
        config["ca"] = str(path.absolute().parent / config["ca"])
    return config


def find_api_key(explicit: str | None, server: str, config: dict[str, Any]) -> str | None:
    """--api-key, then CLOUDASSIST_API_KEY, then the config file, then (for a server on this
    machine only) the admin key a local server wrote to ./var/admin.key."""
    if explicit:
        return explicit
    if os.environ.get(ENV_KEY):
        return os.environ[ENV_KEY].strip()
    if config.get("api_key"):
        return str(config["api_key"]).strip()
    host = server.rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost", "[::1]") and LOCAL_ADMIN_KEY.is_file():
        return LOCAL_ADMIN_KEY.read_text().strip()
    return None


def _with_key(details: aio.ClientCallDetails, token: str) -> aio.ClientCallDetails:
    metadata = aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {token}")
    return aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryUnary(aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_key(client_call_details, self._token), request)


class _UnaryStream(aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        return await continuation(_with_key(client_call_details, self._token), request)


def key_interceptors(token: str | None) -> list[aio.ClientInterceptor]:
    """Interceptors that add `authorization: Bearer <token>` to every call."""
    if not token:
        return []
    return [_UnaryUnary(token), _UnaryStream(token)]


def channel(server: str, token: str | None, ca: Path | None = None, **options: Any) -> aio.Channel:
    """A channel to `server` that sends the API key; TLS when a CA bundle is given."""
    interceptors = key_interceptors(token)
    if ca is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        return aio.secure_channel(server, credentials, interceptors=interceptors, **options)
    return aio.insecure_channel(server, interceptors=interceptors, **options)
