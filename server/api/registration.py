"""Registers servicers behind what every call needs first.

Each handler receives the raw request bytes and parses them itself, so that a request that
does not parse (invalid UTF-8 in a string field, truncated bytes) is INVALID_ARGUMENT rather
than the UNKNOWN grpcio would answer. With a guard, the caller is authenticated, checked and
rate limited before the servicer runs, and mutating calls are audited.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc import aio

from server.api.errors import abort_with
from server.api.guard import Guard
from server.auth import current_principal
from server.domain import reasons
from server.domain.accounts import Principal
from server.domain.errors import DomainError, InvalidArgument

Context = aio.ServicerContext[Any, Any]


async def parse(raw: bytes, request_type: type[Message], context: Context) -> Message:
    try:
        return request_type.FromString(raw)
    except DecodeError as exc:
        await abort_with(
            context,
            InvalidArgument(
                reasons.MALFORMED_REQUEST,
                f"request: not a valid {request_type.DESCRIPTOR.full_name} message ({exc})",
            ),
        )


async def _admit(guard: Guard, context: Context) -> Principal:
    try:
        who = await guard.admit(context)
    except DomainError as error:
        await abort_with(context, error)
    current_principal.set(who)
    return who


def _code(context: Context) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _handler(
    method: MethodDescriptor, implementation: Any, guard: Guard | None
) -> grpc.RpcMethodHandler[Any, Any]:
    request_type = message_factory.GetMessageClass(method.input_type)
    serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
    full_name = f"/{method.containing_service.full_name}/{method.name}"
    audited = guard is not None and guard.audits(method.name)
    if method.client_streaming:

        async def bidi(requests: AsyncIterator[bytes], context: Context) -> Any:
            async def parsed() -> AsyncIterator[Message]:
                async for raw in requests:
                    yield await parse(raw, request_type, context)

            if guard is not None:
                await _admit(guard, context)
            return await implementation(parsed(), context)

        return grpc.stream_stream_rpc_method_handler(bidi, response_serializer=serialize)
    if method.server_streaming:

        async def stream(raw: bytes, context: Context) -> AsyncIterator[Any]:
            request = await parse(raw, request_type, context)
            if guard is not None:
                await _admit(guard, context)
            async for response in implementation(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(stream, response_serializer=serialize)

    async def unary(raw: bytes, context: Context) -> Any:
        request = await parse(raw, request_type, context)
        if guard is None:
            return await implementation(request, context)
        who = await _admit(guard, context)
        response = None
        code = "OK"
        try:
            response = await implementation(request, context)
            return response
        except BaseException:
            code = _code(context)
            raise
        finally:
            if audited:
                await guard.audit(who, full_name, request, response, code, context.peer())

    return grpc.unary_unary_rpc_method_handler(unary, response_serializer=serialize)


def add_service(
    server: aio.Server, servicer: object, service: ServiceDescriptor, guard: Guard | None = None
) -> None:
    handlers = {
        method.name: _handler(method, getattr(servicer, method.name), guard)
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
