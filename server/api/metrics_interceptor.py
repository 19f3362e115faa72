"""Counts every RPC by method and final status code, and times the unary ones."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc import aio

from server.metrics import Metrics

Context = aio.ServicerContext[Any, Any]
if TYPE_CHECKING:  # RpcMethodHandler is generic in the type stubs only
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]


def _code_name(context: Context, error: BaseException | None) -> str:
    """The status the call ended with: what the handler set or aborted with, else what its
    exception means."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED.name
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # grpcio may hand back the numeric code
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return grpc.StatusCode.OK.name if error is None else grpc.StatusCode.UNKNOWN.name


class MetricsInterceptor(aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpcio answers UNIMPLEMENTED itself
            return handler
        method = handler_call_details.method
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
        self._metrics.rpcs.labels(method, _code_name(context, error)).inc()

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
        if inspect.isasyncgenfunction(behaviour):

            async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
                error: BaseException | None = None
                try:
                    async for response in behaviour(request, context):
                        yield response
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    self._count(method, context, error)

            return stream

        async def write(request: Any, context: Context) -> None:
            error: BaseException | None = None
            try:
                await behaviour(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._count(method, context, error)

        return write
