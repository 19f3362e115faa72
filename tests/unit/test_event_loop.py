"""The event loop the server and the agent run on is chosen by CLOUDASSIST_EVENT_LOOP."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import uvloop  # noqa: F401  (the dev extra installs it: these tests must not skip)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cloudassist.common import event_loop


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_default_is_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.ENV, raising=False)
    assert event_loop.loop_factory() is None
    assert event_loop.run(_loop_type()).startswith("asyncio")


def test_uvloop_runs_the_coroutine_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.ENV, "uvloop")
    assert event_loop.run(_loop_type()).startswith("uvloop")


def test_an_unknown_loop_is_refused_by_name_and_the_coroutine_is_not_left_unawaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(event_loop.ENV, "trio")
    coroutine = _loop_type()
    with pytest.raises(event_loop.EventLoopError, match="CLOUDASSIST_EVENT_LOOP: 'trio'"):
        event_loop.run(coroutine)
    assert coroutine.cr_frame is None  # closed, so no "never awaited" warning


def test_a_grpc_aio_round_trip_works_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:

    async def round_trip() -> int:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest()
                )
                return int(reply.status)
        finally:
            await server.stop(None)

    monkeypatch.setenv(event_loop.ENV, "uvloop")
    assert event_loop.run(round_trip()) == health_pb2.HealthCheckResponse.SERVING
