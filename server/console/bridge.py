"""gRPC-Web in, gRPC out: each browser call is forwarded through a real gRPC channel to this
server's own gRPC server (over a private Unix socket), so that it meets the same
interceptors and guards as any other client's: authentication, the admin check, the rate
limit, the audit trail and the metrics. The bridge itself decides nothing but which services
a browser may reach.

Messages pass through as bytes, unparsed; the answer's status, message and rich details
(grpc-status-details-bin) become the gRPC-Web trailers. A server stream is written frame by
frame as its messages arrive, and cancelled when the browser goes away.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from aiohttp import web
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc import aio

from cloudassist.server.api.forwarded import BridgeTrust
from cloudassist.server.console import grpcweb

# Far above any request the API takes (16 KB scripts, 32 KB files) and far below what would
# let a browser make the server buffer much.
MAX_REQUEST_BYTES = 1024 * 1024


def _identity(data: bytes) -> bytes:
    return data


def browser_peer(request: web.BaseRequest) -> str:
    """The browser's address in gRPC's own form: ipv4:HOST:PORT or ipv6:[HOST]:PORT."""
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if not isinstance(peername, tuple) or len(peername) < 2:
        return "unknown"
    host, port = str(peername[0]), int(peername[1])
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def _authorization(request: web.BaseRequest) -> list[tuple[str, str]]:
    """The API key header, the only one forwarded (gRPC metadata takes printable ASCII; any
    other value is left out, and the server answers that the key is missing)."""
    value = request.headers.get("authorization", "")
    if value and value.isascii() and value.isprintable():
        return [("authorization", value)]
    return []


def _status_of(error: aio.AioRpcError) -> dict[str, str]:
    details = next(
        (
            value
            for key, value in error.trailing_metadata() or ()
            if key == grpcweb.STATUS_DETAILS_KEY and isinstance(value, bytes)
        ),
        None,
    )
    return grpcweb.status_headers(error.code(), error.details() or "", details)


class Bridge:
    """The aiohttp handler of `POST /<package.Service>/<Method>`."""

    def __init__(
        self,
        channel: aio.Channel,
        services: Iterable[ServiceDescriptor],
        trust: BridgeTrust,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self._channel = channel
        self._trust = trust
        self._max_request_bytes = max_request_bytes
        self._methods: dict[str, MethodDescriptor] = {
            f"/{service.full_name}/{method.name}": method
            for service in services
            for method in service.methods
            if not method.client_streaming
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in grpcweb.CONTENT_TYPES:
            return web.Response(
                status=415, text="expected content-type application/grpc-web+proto\n"
            )
        method = self._methods.get(request.path)
        if method is None:
            return _trailers_only(
                grpc.StatusCode.UNIMPLEMENTED, f"{request.path}: not served to the console"
            )
        body = await self._read_body(request)
        if body is None:
            return _trailers_only(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request: larger than the console's limit of {self._max_request_bytes} bytes",
            )
        try:
            message = grpcweb.unframe_request(body)
        except grpcweb.FramingError as error:
            return _trailers_only(grpc.StatusCode.INVALID_ARGUMENT, f"request: {error}")
        metadata = [*_authorization(request), *self._trust.metadata(browser_peer(request))]
        deadline = grpcweb.parse_timeout(request.headers.get("grpc-timeout", ""))
        if method.server_streaming:
            return await self._stream(request, method, message, metadata, deadline)
        return await self._unary(request.path, message, metadata, deadline)

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, or None when it is longer than the limit (read no further than that)."""
        if (request.content_length or 0) > self._max_request_bytes:
            return None
        body = bytearray()
        async for chunk in request.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > self._max_request_bytes:
                return None
        return bytes(body)

    async def _unary(
        self, path: str, message: bytes, metadata: list[tuple[str, str]], deadline: float | None
    ) -> web.StreamResponse:
        call = self._channel.unary_unary(
            path, request_serializer=_identity, response_deserializer=_identity
        )
        try:
            answer: bytes = await call(message, metadata=metadata, timeout=deadline)
        except aio.AioRpcError as error:
            return _trailers_only_headers(_status_of(error))
        body = grpcweb.frame(answer) + grpcweb.trailers_frame(
            grpcweb.status_headers(grpc.StatusCode.OK)
        )
        return web.Response(body=body, headers=_response_headers())

    async def _stream(
        self,
        request: web.Request,
        method: MethodDescriptor,
        message: bytes,
        metadata: list[tuple[str, str]],
        deadline: float | None,
    ) -> web.StreamResponse:
        path = f"/{method.containing_service.full_name}/{method.name}"
        call = self._channel.unary_stream(
            path, request_serializer=_identity, response_deserializer=_identity
        )(message, metadata=metadata, timeout=deadline)
        response: web.StreamResponse | None = None
        # However this ends (the browser going away cancels this handler, or makes a write
        # fail), the upstream call ends with it.
        try:
            status = grpcweb.status_headers(grpc.StatusCode.OK)
            try:
                async for answer in call:
                    if response is None:
                        response = web.StreamResponse(headers=_response_headers())
                        await response.prepare(request)
                    # Each message is written (and so sent) as it arrives: live output.
                    await response.write(grpcweb.frame(answer))
            except aio.AioRpcError as error:
                status = _status_of(error)
            if response is None:  # nothing was sent: the status goes in the headers
                return _trailers_only_headers(status)
            await response.write(grpcweb.trailers_frame(status))
            await response.write_eof()
            return response
        finally:
            call.cancel()


def _response_headers() -> dict[str, str]:
    return {"content-type": grpcweb.RESPONSE_CONTENT_TYPE, "grpc-accept-encoding": "identity"}


def _trailers_only_headers(status: dict[str, str]) -> web.Response:
    return web.Response(headers={**_response_headers(), **status})


def _trailers_only(code: grpc.StatusCode, message: str) -> web.Response:
    return _trailers_only_headers(grpcweb.status_headers(code, message))
