"""server/api/metrics_interceptor.py: the status code an RPC is counted under."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from server.api.metrics_interceptor import MetricsInterceptor, _code_name
from server.metrics import Metrics


class FakeContext:
    """The one thing `_code_name` asks of a servicer context: the code the handler set."""

    def __init__(self, code: object = None) -> None:
        self._code = code

    def code(self) -> object:
        return self._code


def name(code: object, error: BaseException | None = None) -> str:
    return _code_name(FakeContext(code), error)  # type: ignore[arg-type]


def test_a_call_that_returns_without_setting_a_code_is_ok() -> None:
    assert name(None) == "OK"


def test_the_code_the_handler_set_or_aborted_with_wins() -> None:
    assert name(grpc.StatusCode.NOT_FOUND, Exception("aborted")) == "NOT_FOUND"
    assert name(grpc.StatusCode.INVALID_ARGUMENT) == "INVALID_ARGUMENT"
    assert name(grpc.StatusCode.OK) == "OK"


def test_a_numeric_code_is_named() -> None:
    assert name(5) == "NOT_FOUND"
    assert name(3) == "INVALID_ARGUMENT"
    assert name(0) == "OK"
    assert name(99) == "UNKNOWN"


def test_an_exception_without_a_code_is_unknown() -> None:
    assert name(None, ValueError("bug")) == "UNKNOWN"


@pytest.mark.parametrize("error", [asyncio.CancelledError(), GeneratorExit()])
def test_a_cancelled_call_is_cancelled_whatever_the_code(error: BaseException) -> None:
    assert name(None, error) == "CANCELLED"
    assert name(grpc.StatusCode.OK, error) == "CANCELLED"


# Through a real grpc.aio server: what grpcio's context reports after each way a call can end.

SERVICE = "test.Probe"


async def _ok(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def _not_found(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("abort raises")


async def _set_code(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
    return b""


async def _crash(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    raise ValueError("a bug")


async def _stream(request: bytes, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    yield b"one"
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "enough")


# Set when the endless stream's handler has unwound after the client cancelled it.
endless_ended = asyncio.Event()


async def _endless(request: bytes, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    """Sends one message, then waits for ever, until the client cancels."""
    try:
        yield b"one"
        await asyncio.Event().wait()
    finally:
        # The interceptor counts the call in the same step, as the cancellation unwinds.
        endless_ended.set()


def _handler() -> grpc.GenericRpcHandler:
    unary = {
        "Ok": _ok,
        "NotFound": _not_found,
        "SetCode": _set_code,
        "Crash": _crash,
    }
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        method: grpc.unary_unary_rpc_method_handler(behaviour)
        for method, behaviour in unary.items()
    }
    handlers["Stream"] = grpc.unary_stream_rpc_method_handler(_stream)
    handlers["Endless"] = grpc.unary_stream_rpc_method_handler(_endless)
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


async def test_a_real_server_counts_each_call_under_its_final_code() -> None:
    metrics = Metrics()
    endless_ended.clear()
    server = aio.server(interceptors=[MetricsInterceptor(metrics)])
    server.add_generic_rpc_handlers((_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await channel.unary_unary(f"/{SERVICE}/Ok")(b"hi") == b"hi"
            for method, code in [
                ("NotFound", grpc.StatusCode.NOT_FOUND),
                ("SetCode", grpc.StatusCode.FAILED_PRECONDITION),
                ("Crash", grpc.StatusCode.UNKNOWN),
            ]:
                with pytest.raises(aio.AioRpcError) as error:
                    await channel.unary_unary(f"/{SERVICE}/{method}")(b"")
                assert error.value.code() is code
            stream = channel.unary_stream(f"/{SERVICE}/Stream")(b"")
            with pytest.raises(aio.AioRpcError) as error:
                [message async for message in stream]
            assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            following = channel.unary_stream(f"/{SERVICE}/Endless")(b"")
            assert await following.read() == b"one"
            following.cancel()
            await asyncio.wait_for(endless_ended.wait(), 10)
    finally:
        await server.stop(None)

    def counted(method: str, code: str) -> float | None:
        return metrics.registry.get_sample_value(
            "cloudassist_rpcs_total", {"method": f"/{SERVICE}/{method}", "code": code}
        )

    assert counted("Ok", "OK") == 1
    assert counted("NotFound", "NOT_FOUND") == 1
    assert counted("SetCode", "FAILED_PRECONDITION") == 1
    assert counted("Crash", "UNKNOWN") == 1
    assert counted("Stream", "RESOURCE_EXHAUSTED") == 1
    assert counted("Endless", "CANCELLED") == 1
    assert counted("Ok", "UNKNOWN") is None
    timed = metrics.registry.get_sample_value(
        "cloudassist_rpc_duration_seconds_count", {"method": f"/{SERVICE}/Crash"}
    )
    assert timed == 1
    # Streams are counted, not timed.
    streamed = metrics.registry.get_sample_value(
        "cloudassist_rpc_duration_seconds_count", {"method": f"/{SERVICE}/Stream"}
    )
    assert streamed is None
