"""The console's gRPC-Web bridge and site: the wire format, the trailers, the security headers,
and forwarding to a real grpc.aio server on a Unix socket (the bridge's own path), with a
stand-in CommandService whose handlers show what arrived."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from cloudassist.server.api.forwarded import BRIDGE_TOKEN, FORWARDED_FOR, BridgeTrust
from cloudassist.server.console import grpcweb
from cloudassist.server.console.bridge import Bridge
from cloudassist.server.console.site import CONTENT_SECURITY_POLICY, make_app
from cloudassist.v1 import agent_pb2, command_pb2

COMMANDS = command_pb2.DESCRIPTOR.services_by_name["CommandService"]
AGENTS = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
GRPC_WEB = {"content-type": "application/grpc-web+proto"}
ASSETS = {"/": (b"<!doctype html><title>console</title>", "text/html; charset=utf-8")}


# --- the wire format ---------------------------------------------------------------------


def test_a_request_is_one_message_frame() -> None:
    assert grpcweb.unframe_request(grpcweb.frame(b"hello")) == b"hello"
    assert grpcweb.unframe_request(grpcweb.frame(b"")) == b""
    assert grpcweb.frame(b"ab") == b"\x00\x00\x00\x00\x02ab"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\x00\x00", "no gRPC-Web frame"),
        (b"\x01\x00\x00\x00\x01x", "compressed"),
        (b"\x80\x00\x00\x00\x00", "not a message"),
        (b"\x00\x00\x00\x00\x05abc", "takes 10"),
        (grpcweb.frame(b"a") + grpcweb.frame(b"b"), "takes 6"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(grpcweb.FramingError, match=why):
        grpcweb.unframe_request(body)


def test_trailers_carry_status_message_and_details() -> None:
    details = status_pb2.Status(code=3, message="bad").SerializeToString()
    headers = grpcweb.status_headers(grpc.StatusCode.INVALID_ARGUMENT, "naïve 100%\n", details)
    assert headers == {
        "grpc-status": "3",
        "grpc-message": "na%C3%AFve 100%25%0A",
        "grpc-status-details-bin": base64.b64encode(details).decode(),
    }
    frame = grpcweb.trailers_frame({"grpc-status": "0"})
    assert frame == b"\x80" + struct.pack(">I", 16) + b"grpc-status: 0\r\n"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("10S", 10.0), ("250m", 0.25), ("2M", 120.0), ("1H", 3600.0), ("", None), ("5x", None)],
)
def test_grpc_timeout(value: str, seconds: float | None) -> None:
    assert grpcweb.parse_timeout(value) == seconds


def test_forwarded_peer_is_believed_only_from_the_bridge() -> None:
    trust = BridgeTrust()
    forwarded = trust.metadata("ipv4:10.1.2.3:5555")
    assert trust.peer("unix:", forwarded) == "ipv4:10.1.2.3:5555 (console)"
    # Not on the Unix socket, or without the bridge's token: the transport's own peer.
    assert trust.peer("ipv4:127.0.0.1:4000", forwarded) == "ipv4:127.0.0.1:4000"
    spoofed = [(FORWARDED_FOR, "ipv4:10.1.2.3:5555"), (BRIDGE_TOKEN, "guess")]
    assert trust.peer("unix:", spoofed) == "unix:"
    assert trust.peer("unix:", [(FORWARDED_FOR, "ipv4:10.1.2.3:5555")]) == "unix:"


# --- through the bridge to a real gRPC server ----------------------------------------------


class StandIn:
    """CommandService handlers that record what reached them."""

    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}
        self.second_message = asyncio.Event()
        self.stream_ended = asyncio.Event()

    async def describe(self, request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        self.metadata = {k: str(v) for k, v in context.invocation_metadata() or ()}
        parsed = command_pb2.DescribeCommandsRequest.FromString(request)
        if parsed.name == "refuse":
            bad = any_pb2.Any()
            bad.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="name", description="name: not this one"
                        )
                    ]
                )
            )
            status = status_pb2.Status(code=3, message="name: not this one", details=[bad])
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                status.message,
                trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
            )
        return command_pb2.DescribeCommandsResponse(total_count=7).SerializeToString()

    async def watch(
        self, request: bytes, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        try:
            yield _chunk(b"one")
            # The second message is made only once the browser side has read the first.
            await self.second_message.wait()
            yield _chunk(b"two")
            if command_pb2.WatchInvocationRequest.FromString(request).invoke_id == "t-hold":
                await asyncio.Event().wait()  # until cancelled
        finally:
            self.stream_ended.set()


def _chunk(data: bytes) -> bytes:
    return command_pb2.WatchInvocationResponse(
        output=command_pb2.OutputChunk(data=data)
    ).SerializeToString()


@pytest.fixture
async def bridged(tmp_path: Path) -> AsyncIterator[tuple[str, StandIn]]:
    stand_in = StandIn()
    server = aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                COMMANDS.full_name,
                {
                    "DescribeCommands": grpc.unary_unary_rpc_method_handler(stand_in.describe),
                    "WatchInvocation": grpc.unary_stream_rpc_method_handler(stand_in.watch),
                },
            ),
        )
    )
    address = f"unix:{tmp_path / 'grpc.sock'}"
    server.add_insecure_port(address)
    await server.start()
    channel = aio.insecure_channel(address)
    bridge = Bridge(channel, [COMMANDS], BridgeTrust(token="t0ken"), max_request_bytes=1024)
    runner = web.AppRunner(make_app(bridge, ASSETS), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", stand_in
    finally:
        await runner.cleanup()
        await channel.close()
        await server.stop(None)


def _frames(body: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while body:
        flag, length = struct.unpack(">BI", body[:5])
        frames.append((flag, body[5 : 5 + length]))
        body = body[5 + length :]
    return frames


def _request(message: Any) -> bytes:
    return grpcweb.frame(message.SerializeToString())


async def test_every_response_has_the_security_headers(bridged: tuple[str, StandIn]) -> None:
    url, _ = bridged
    async with aiohttp.ClientSession() as session:
        for method, path in [("GET", "/"), ("GET", "/missing"), ("POST", "/x/y")]:
            async with session.request(method, url + path) as response:
                assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["Referrer-Policy"] == "no-referrer"
                assert response.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY


async def test_a_unary_call_is_forwarded_with_the_key_and_the_browser(
    bridged: tuple[str, StandIn],
) -> None:
    url, stand_in = bridged
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/{COMMANDS.full_name}/DescribeCommands",
            data=_request(command_pb2.DescribeCommandsRequest(region_id="cn-hangzhou")),
            headers={**GRPC_WEB, "authorization": "Bearer k-1.secret", "x-forwarded-for": "evil"},
        ) as response,
    ):
        body = await response.read()
        assert response.headers["content-type"] == "application/grpc-web+proto"
    (data_flag, data), (trailer_flag, trailers) = _frames(body)
    assert data_flag == 0
    assert command_pb2.DescribeCommandsResponse.FromString(data).total_count == 7
    assert trailer_flag == 0x80
    assert trailers == b"grpc-status: 0\r\n"
    assert stand_in.metadata["authorization"] == "Bearer k-1.secret"
    assert stand_in.metadata[BRIDGE_TOKEN] == "t0ken"
    # The browser's own address, never what it claims in a header.
    assert stand_in.metadata[FORWARDED_FOR].startswith("ipv4:127.0.0.1:")


async def test_a_refusal_keeps_its_rich_details(bridged: tuple[str, StandIn]) -> None:
    url, _ = bridged
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/{COMMANDS.full_name}/DescribeCommands",
            data=_request(command_pb2.DescribeCommandsRequest(name="refuse")),
            headers=GRPC_WEB,
        ) as response,
    ):
        assert await response.read() == b""  # trailers-only: the status is in the headers
        headers = response.headers
    assert headers["grpc-status"] == "3"
    assert headers["grpc-message"] == "name: not this one"
    status = status_pb2.Status.FromString(base64.b64decode(headers["grpc-status-details-bin"]))
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "name"


@pytest.mark.parametrize(
    ("path", "body", "headers", "code"),
    [
        (f"/{AGENTS.full_name}/Register", grpcweb.frame(b""), GRPC_WEB, "12"),
        (f"/{COMMANDS.full_name}/Nope", grpcweb.frame(b""), GRPC_WEB, "12"),
        (f"/{COMMANDS.full_name}/DescribeCommands", b"\x00" * 2000, GRPC_WEB, "8"),
        (f"/{COMMANDS.full_name}/DescribeCommands", b"\x01\x00\x00\x00\x00", GRPC_WEB, "3"),
    ],
)
async def test_what_is_not_forwarded(
    bridged: tuple[str, StandIn], path: str, body: bytes, headers: dict[str, str], code: str
) -> None:
    url, stand_in = bridged
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, data=body, headers=headers) as response,
    ):
        assert response.headers["grpc-status"] == code
    assert stand_in.metadata == {}


async def test_other_content_types_are_refused(bridged: tuple[str, StandIn]) -> None:
    url, _ = bridged
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/{COMMANDS.full_name}/DescribeCommands",
            data=grpcweb.frame(b""),
            headers={"content-type": "application/grpc-web-text"},
        ) as response,
    ):
        assert response.status == 415


async def test_a_stream_is_sent_frame_by_frame(bridged: tuple[str, StandIn]) -> None:
    url, stand_in = bridged
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/{COMMANDS.full_name}/WatchInvocation",
            data=_request(command_pb2.WatchInvocationRequest(invoke_id="t-1")),
            headers=GRPC_WEB,
        ) as response,
    ):
        first = await response.content.readexactly(5)
        length = struct.unpack(">I", first[1:])[0]
        message = command_pb2.WatchInvocationResponse.FromString(
            await response.content.readexactly(length)
        )
        # Read before the server has made the second message: the first was flushed alone.
        assert message.output.data == b"one"
        assert not stand_in.second_message.is_set()
        stand_in.second_message.set()
        rest = _frames(await response.content.read())
    assert [
        command_pb2.WatchInvocationResponse.FromString(d).output.data
        for flag, d in rest
        if flag == 0
    ] == [b"two"]
    assert rest[-1] == (0x80, b"grpc-status: 0\r\n")


async def test_a_browser_going_away_cancels_the_upstream_stream(
    bridged: tuple[str, StandIn],
) -> None:
    url, stand_in = bridged
    stand_in.second_message.set()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/{COMMANDS.full_name}/WatchInvocation",
            data=_request(command_pb2.WatchInvocationRequest(invoke_id="t-hold")),
            headers=GRPC_WEB,
        ) as response,
    ):
        await response.content.readexactly(5)
        assert not stand_in.stream_ended.is_set()
        response.close()  # the connection is dropped, as a closed tab drops it
    await asyncio.wait_for(stand_in.stream_ended.wait(), 10)
