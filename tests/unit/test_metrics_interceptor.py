"""server/api/metrics_interceptor.py: the status code an RPC is counted under."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc import aio

from cloudassist.server.api.metrics_interceptor import MetricsInterceptor, _code_name
from cloudassist.server.metrics import Metrics

Context = aio.ServicerContext[Any, Any]


class FakeContext:
    """What `_code_name` asks of a servicer context: the code the handler set, and the time
    left before the client's deadline (None: the client set none)."""

    def __init__(self, code: object = None, remaining: float | None = None) -> None:
        self._code = code
        self._remaining = remaining

    def code(self) -> object:
        return self._code

    def time_remaining(self) -> float | None:
        return self._remaining


def name(
    code: object,
    error: BaseException | None = None,
    remaining: float | None = None,
    cut_short: bool = False,
) -> str:
    return _code_name(FakeContext(code, remaining), error, cut_short)  # type: ignore[arg-type]


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


# What grpcio raises in a handler whose call ends under it: the task's cancellation, or a
# write failing first.
CUT_SHORT = [asyncio.CancelledError(), aio.InternalError("the write failed")]


@pytest.mark.parametrize("error", CUT_SHORT)
def test_a_call_cut_short_before_its_deadline_is_cancelled_whatever_the_code(
    error: BaseException,
) -> None:
    assert name(None, error) == "CANCELLED"
    assert name(grpc.StatusCode.OK, error) == "CANCELLED"
    assert name(None, error, remaining=30.0) == "CANCELLED"


@pytest.mark.parametrize("error", CUT_SHORT)
def test_a_call_cut_short_at_its_deadline_exceeded_it(error: BaseException) -> None:
    assert name(None, error, remaining=0) == "DEADLINE_EXCEEDED"
    assert name(grpc.StatusCode.OK, error, remaining=0) == "DEADLINE_EXCEEDED"
    # The client's own deadline can pass a moment before the server's copy of it.
    assert name(None, error, remaining=0.01) == "DEADLINE_EXCEEDED"


def test_a_handler_that_caught_its_cancellation_was_cut_short_whatever_it_did() -> None:
    assert name(None, cut_short=True) == "CANCELLED"
    assert name(grpc.StatusCode.OK, cut_short=True, remaining=30.0) == "CANCELLED"
    assert name(None, ValueError("in cleanup"), cut_short=True) == "CANCELLED"
    assert name(None, cut_short=True, remaining=0) == "DEADLINE_EXCEEDED"


# Through a real grpc.aio server: what grpcio's context reports after each way a call can end.

SERVICE = "test.Probe"
BIG = b"x" * (1 << 20)  # more than a client's flow-control window at its default size
# Bandwidth probing would grow the window as data flows: without it, a client that stops
# reading stops the server's writes at once.
CLIENT_OPTIONS = [("grpc.http2.bdp_probe", 0)]


@dataclass
class Probe:
    """The handlers: unary, generator and write-style unary-stream, and write-style
    stream-stream (like AgentService/Connect), each ending one way."""

    # Set by the waiting unary handlers once they wait.
    waiting: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by the flooding handlers as they send their second message, which blocks: the
    # client reads only the first.
    flooding: asyncio.Event = field(default_factory=asyncio.Event)
    # What the flooding generator was closed by, once it was.
    flood_closed_by: type[BaseException] | None = None

    async def ok(self, request: bytes, context: Context) -> bytes:
        return request

    async def not_found(self, request: bytes, context: Context) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        raise AssertionError("abort raises")

    async def set_code(self, request: bytes, context: Context) -> bytes:
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        return b""

    async def crash(self, request: bytes, context: Context) -> bytes:
        raise ValueError("a bug")

    async def wait(self, request: bytes, context: Context) -> bytes:
        self.waiting.set()
        await asyncio.Event().wait()
        raise AssertionError("never set")

    async def swallow(self, request: bytes, context: Context) -> bytes:
        """Answers even when grpcio cancels it."""
        self.waiting.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return b"too late"

    async def yield_then_abort(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"one"
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "enough")

    async def yield_two(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"one"
        yield b"two"

    async def yield_then_crash(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"one"
        raise ValueError("a bug")

    async def yield_then_wait(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"one"
        await asyncio.Event().wait()

    async def yield_flood(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        """Paused at `yield` while each message is written, so from the second on."""
        try:
            yield BIG
            self.flooding.set()
            while True:
                yield BIG
        except BaseException as error:
            self.flood_closed_by = type(error)
            raise

    async def write_two(self, request: bytes, context: Context) -> None:
        await context.write(b"one")
        await context.write(b"two")

    async def write_then_crash(self, request: bytes, context: Context) -> None:
        await context.write(b"one")
        raise ValueError("a bug")

    async def write_then_wait(self, request: bytes, context: Context) -> None:
        await context.write(b"one")
        await asyncio.Event().wait()

    async def write_flood(self, request: bytes, context: Context) -> None:
        """Blocked in `context.write` from the second message on."""
        await context.write(BIG)
        self.flooding.set()
        while True:
            await context.write(BIG)

    async def echo(self, requests: AsyncIterator[bytes], context: Context) -> None:
        async for request in requests:
            await context.write(request)

    async def echo_then_crash(self, requests: AsyncIterator[bytes], context: Context) -> None:
        async for request in requests:
            await context.write(request)
            raise ValueError("a bug")

    async def relay(self, requests: AsyncIterator[bytes], context: Context) -> None:
        """Shaped like AgentService/Connect: a task reads the requests while the handler
        writes what it is given, until the call ends."""
        outgoing: asyncio.Queue[bytes] = asyncio.Queue()

        async def read() -> None:
            async for request in requests:
                outgoing.put_nowait(request)

        reader = asyncio.create_task(read())
        try:
            while True:
                await context.write(await outgoing.get())
        finally:
            reader.cancel()

    def generic_handler(self) -> grpc.GenericRpcHandler:
        unary = {
            "Ok": self.ok,
            "NotFound": self.not_found,
            "SetCode": self.set_code,
            "Crash": self.crash,
            "Wait": self.wait,
            "Swallow": self.swallow,
        }
        unary_stream = {
            "YieldThenAbort": self.yield_then_abort,
            "YieldTwo": self.yield_two,
            "YieldThenCrash": self.yield_then_crash,
            "YieldThenWait": self.yield_then_wait,
            "YieldFlood": self.yield_flood,
            "WriteTwo": self.write_two,
            "WriteThenCrash": self.write_then_crash,
            "WriteThenWait": self.write_then_wait,
            "WriteFlood": self.write_flood,
        }
        stream_stream = {
            "Echo": self.echo,
            "EchoThenCrash": self.echo_then_crash,
            "Relay": self.relay,
        }
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for method, unary_behaviour in unary.items():
            handlers[method] = grpc.unary_unary_rpc_method_handler(unary_behaviour)
        for method, stream_behaviour in unary_stream.items():
            handlers[method] = grpc.unary_stream_rpc_method_handler(stream_behaviour)
        for method, bidi_behaviour in stream_stream.items():
            handlers[method] = grpc.stream_stream_rpc_method_handler(bidi_behaviour)
        return grpc.method_handlers_generic_handler(SERVICE, handlers)


@dataclass
class Served:
    channel: aio.Channel
    metrics: Metrics
    probe: Probe

    def counts(self, method: str) -> dict[str, float]:
        """The method's calls counted so far, by code."""
        return {
            sample.labels["code"]: sample.value
            for family in self.metrics.registry.collect()
            for sample in family.samples
            if sample.name == "cloudassist_rpcs_total"
            and sample.labels["method"] == f"/{SERVICE}/{method}"
        }

    async def settled_counts(self, method: str, within: float = 10.0) -> dict[str, float]:
        """The counts once the method's call is counted: the server side may finish after
        the client has seen how the call ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not (counts := self.counts(method)):
            assert loop.time() < deadline, f"{method} was not counted within {within} s"
            await asyncio.sleep(0.01)
        return counts

    def timed(self, method: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "cloudassist_rpc_duration_seconds_count", {"method": f"/{SERVICE}/{method}"}
        )


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    metrics = Metrics()
    probe = Probe()
    server = aio.server(interceptors=[MetricsInterceptor(metrics)])
    server.add_generic_rpc_handlers((probe.generic_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS) as channel:
            yield Served(channel, metrics, probe)
    finally:
        await server.stop(None)


# Calls that end on their own: (method, arity, what the client receives, the final code).
ENDINGS = [
    ("Ok", "unary", [b"hi"], "OK"),
    ("NotFound", "unary", [], "NOT_FOUND"),
    ("SetCode", "unary", [], "FAILED_PRECONDITION"),
    ("Crash", "unary", [], "UNKNOWN"),
    ("YieldThenAbort", "unary_stream", [b"one"], "RESOURCE_EXHAUSTED"),
    ("YieldTwo", "unary_stream", [b"one", b"two"], "OK"),
    ("YieldThenCrash", "unary_stream", [b"one"], "UNKNOWN"),
    ("WriteTwo", "unary_stream", [b"one", b"two"], "OK"),
    ("WriteThenCrash", "unary_stream", [b"one"], "UNKNOWN"),
    ("Echo", "stream_stream", [b"hi", b"there"], "OK"),
    ("EchoThenCrash", "stream_stream", [b"hi"], "UNKNOWN"),
]


async def _received(call: Any) -> list[bytes]:
    """What the call answered before it ended (a unary call's error answers nothing)."""
    received: list[bytes] = []
    try:
        if isinstance(call, aio.UnaryUnaryCall):
            received.append(await call)
        else:
            async for message in call:
                received.append(message)
    except aio.AioRpcError:
        pass
    return received


@pytest.mark.parametrize(("method", "arity", "answers", "code"), ENDINGS)
async def test_a_call_that_ends_on_its_own_is_counted_under_its_final_code(
    served: Served, method: str, arity: str, answers: list[bytes], code: str
) -> None:
    full = f"/{SERVICE}/{method}"
    call: Any
    if arity == "unary":
        call = served.channel.unary_unary(full)(b"hi")
    elif arity == "unary_stream":
        call = served.channel.unary_stream(full)(b"hi")
    else:
        call = served.channel.stream_stream(full)(iter([b"hi", b"there"]))
    assert await _received(call) == answers
    assert (await call.code()).name == code
    assert await served.settled_counts(method) == {code: 1}
    # Unary calls are timed; streams are counted, not timed.
    assert served.timed(method) == (1 if arity == "unary" else None)


# Calls the client ends, waiting in the handler: (method, how to start the call and wait
# until the handler runs).
Start = Callable[[Served, float | None], Awaitable[Any]]


def _start_unary(method: str) -> Start:
    async def start(served: Served, deadline: float | None) -> Any:
        call = served.channel.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=deadline)
        await served.probe.waiting.wait()
        return call

    return start


def _start_streaming(method: str, flooding: bool = False) -> Start:
    async def start(served: Served, deadline: float | None) -> Any:
        call = served.channel.unary_stream(f"/{SERVICE}/{method}")(b"", timeout=deadline)
        assert await call.read() != aio.EOF  # the handler is running
        if flooding:  # and stuck sending the next message, which is never read
            await served.probe.flooding.wait()
        return call

    return start


async def _start_relay(served: Served, deadline: float | None) -> Any:
    call = served.channel.stream_stream(f"/{SERVICE}/Relay")(timeout=deadline)
    await call.write(b"hi")
    assert await call.read() == b"hi"  # the handler now waits for more to write
    return call


CUT_SHORT_CALLS = {
    # A unary handler awaiting an event.
    "Wait": _start_unary("Wait"),
    # A unary handler that catches its cancellation and answers.
    "Swallow": _start_unary("Swallow"),
    # A generator awaiting an event between messages.
    "YieldThenWait": _start_streaming("YieldThenWait"),
    # A generator paused at `yield` while its message waits on flow control.
    "YieldFlood": _start_streaming("YieldFlood", flooding=True),
    # A write-style handler awaiting an event between writes.
    "WriteThenWait": _start_streaming("WriteThenWait"),
    # A write-style handler blocked in `context.write` on flow control.
    "WriteFlood": _start_streaming("WriteFlood", flooding=True),
    # A write-style stream-stream handler waiting for something to write.
    "Relay": _start_relay,
}


@pytest.mark.parametrize("method", CUT_SHORT_CALLS)
async def test_a_call_past_its_deadline_is_counted_as_deadline_exceeded(
    served: Served, method: str
) -> None:
    call = await CUT_SHORT_CALLS[method](served, 0.5)
    assert await call.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert await served.settled_counts(method) == {"DEADLINE_EXCEEDED": 1}


@pytest.mark.parametrize("deadline", [None, 60.0], ids=["no-deadline", "before-its-deadline"])
@pytest.mark.parametrize("method", CUT_SHORT_CALLS)
async def test_a_call_the_client_cancels_is_counted_as_cancelled(
    served: Served, method: str, deadline: float | None
) -> None:
    call = await CUT_SHORT_CALLS[method](served, deadline)
    call.cancel()
    assert await call.code() is grpc.StatusCode.CANCELLED
    assert await served.settled_counts(method) == {"CANCELLED": 1}


async def test_a_generator_cancelled_while_paused_at_yield_is_closed_as_it_is_counted(
    served: Served,
) -> None:
    call = await CUT_SHORT_CALLS["YieldFlood"](served, None)
    call.cancel()
    assert await served.settled_counts("YieldFlood") == {"CANCELLED": 1}
    # Closed by the interceptor before it counted, not later by the garbage collector.
    assert served.probe.flood_closed_by is GeneratorExit
