"""Maps domain errors to gRPC statuses with rich details (google.rpc.ErrorInfo, BadRequest).

One decorator per RPC kind, as in MLServer: unary-unary and unary-stream handlers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc import aio

from cloudassist.server.domain.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)

log = logging.getLogger(__name__)

ERROR_DOMAIN = "cloudassist.v1"

_CODES: list[tuple[type[DomainError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
]


def status_code_of(error: DomainError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INVALID_ARGUMENT


# Error texts echo request values: keep the whole status well under the 8 KiB of trailers a
# gRPC client accepts by default (grpc-message is percent-encoded UTF-8, the details Base64).
MAX_MESSAGE_CHARS = 200
MAX_METADATA_KEY_CHARS = 32
MAX_METADATA_VALUE_CHARS = 48
MAX_METADATA_ENTRIES = 6


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rich_status(error: DomainError) -> status_pb2.Status:
    """The google.rpc.Status for a domain error: ErrorInfo always, BadRequest for a field."""
    code = status_code_of(error)
    message = _short(error.message, MAX_MESSAGE_CHARS)
    metadata = {
        _short(k, MAX_METADATA_KEY_CHARS): _short(v, MAX_METADATA_VALUE_CHARS)
        for k, v in list(error.metadata.items())[:MAX_METADATA_ENTRIES]
    }
    details = []
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    )
    details.append(info)
    if error.field:
        bad_request = any_pb2.Any()
        bad_request.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=error.field, description=message, reason=error.reason
                    )
                ]
            )
        )
        details.append(bad_request)
    if error.retry_after_seconds is not None:
        retry = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)


async def abort_with(context: aio.ServicerContext[Any, Any], error: DomainError) -> NoReturn:
    status = rich_status(error)
    await context.abort(
        status_code_of(error),
        status.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )
    raise AssertionError("abort returned")  # pragma: no cover


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")

UnaryHandler = Callable[[Self, Req, aio.ServicerContext[Any, Any]], Awaitable[Resp]]
StreamHandler = Callable[[Self, Req, aio.ServicerContext[Any, Any]], AsyncIterator[Resp]]


def unary_errors(handler: UnaryHandler[Self, Req, Resp]) -> UnaryHandler[Self, Req, Resp]:
    @functools.wraps(handler)
    async def wrapper(self: Self, request: Req, context: aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await handler(self, request, context)
        except DomainError as error:
            await abort_with(context, error)

    return wrapper


def stream_errors(handler: StreamHandler[Self, Req, Resp]) -> StreamHandler[Self, Req, Resp]:
    @functools.wraps(handler)
    async def wrapper(
        self: Self, request: Req, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Resp]:
        try:
            async for response in handler(self, request, context):
                yield response
        except DomainError as error:
            await abort_with(context, error)

    return wrapper
