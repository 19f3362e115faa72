"""Counts every RPC by method and final status code, and times the unary ones."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc import aio

from cloudassist.server.metrics import Metrics

Context = aio.ServicerContext[Any, Any]
if TYPE_CHECKING:  # RpcMethodHandler is generic in the type stubs only
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]

# The server's copy of a client's deadline starts when the request arrives, so it can lag the
# client's own by the time the request took; a client timing out reaches the server as a
# cancel that comes that much early.
DEADLINE_SLACK_SECONDS = 0.1


def _cut_short(context: Context) -> str:
    """Why a call the client's side ended under its handler ended: its deadline, if that has
    (all but) passed, else a cancel (or the connection dropping, which grpcio reports alike)."""
    remaining: float | None = context.time_remaining()  # None: no deadline (the stubs omit it)
    if remaining is not None and remaining <= DEADLINE_SLACK_SECONDS:
        return grpc.StatusCode.DEADLINE_EXCEEDED.name
    return grpc.StatusCode.CANCELLED.name


def _code_name(context: Context, error: BaseException | None, cut_short: bool = False) -> str:
    """The status the call ended with: what the handler set or aborted with, else what its
    exception means. `cut_short`: grpcio cancelled the handler's task, whatever it raised."""
    # grpcio cancels the call's task when the call ends under its handler, and a write into
    # such a call fails with its InternalError, whichever comes first.
    if cut_short or isinstance(error, asyncio.CancelledError | aio.InternalError):
        return _cut_short(context)
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # grpcio may hand back the numeric code
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return grpc.StatusCode.OK.name if error is None else grpc.StatusCode.UNKNOWN.name


class MetricsInterceptor(aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        # method -> (its handler, the counting handler made for it): made once per method,
        # not once per call.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpcio answers UNIMPLEMENTED itself
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(method, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # stream-unary: none are served

    def _count(self, method: str, context: Context, error: BaseException | None) -> None:
        # A handler that caught grpcio's cancellation of its task and ended otherwise was
        # still cut short.
        task = asyncio.current_task()
        cut_short = task is not None and task.cancelling() > 0
        self._metrics.rpcs.labels(method, _code_name(context, error, cut_short)).inc()

    def _unary(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        async def handle(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._metrics.rpc_seconds.labels(method).observe(time.perf_counter() - started)
                self._count(method, context, error)

        return handle

    def _streaming(self, method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
        """A write-style handler, counted as it ends. A generator handler is run write-style
        too: left to grpcio, one cancelled while paused at `yield` is only closed (and so
        counted) when it is garbage-collected.

        A handler that returns as its request stream ends is counted by how it returned:
        grpcio ends that stream alike for a client's half-close and its cancel, and says no
        more (a cancel only shows if the handler is still running when grpcio cancels it)."""

        async def send_each(request: Any, context: Context) -> None:
            responses: AsyncGenerator[Any, None] = behaviour(request, context)
            try:
                async for response in responses:
                    await context.write(response)
            finally:
                await responses.aclose()  # at once, not when garbage-collected

        run: Callable[[Any, Context], Awaitable[None]] = (
            send_each if inspect.isasyncgenfunction(behaviour) else behaviour
        )

        async def write(request: Any, context: Context) -> None:
            error: BaseException | None = None
            try:
                await run(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._count(method, context, error)

        return write
