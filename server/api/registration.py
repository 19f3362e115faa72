"""Registers servicers so that a request that does not parse is INVALID_ARGUMENT.

The generated `add_*_to_server` functions let grpcio parse requests, and a parse failure
(invalid UTF-8 in a string field, truncated bytes) reaches the client as UNKNOWN. Here each
handler receives the raw bytes and parses them itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc import aio

from server.api.errors import abort_with
from server.domain import reasons
from server.domain.errors import InvalidArgument

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


def _handler(method: Any, implementation: Any) -> grpc.RpcMethodHandler[Any, Any]:
    request_type = message_factory.GetMessageClass(method.input_type)
    serialize = message_factory.GetMessageClass(method.output_type).SerializeToString
    if method.client_streaming:

        async def bidi(requests: AsyncIterator[bytes], context: Context) -> Any:
            async def parsed() -> AsyncIterator[Message]:
                async for raw in requests:
                    yield await parse(raw, request_type, context)

            return await implementation(parsed(), context)

        return grpc.stream_stream_rpc_method_handler(bidi, response_serializer=serialize)
    if method.server_streaming:

        async def stream(raw: bytes, context: Context) -> AsyncIterator[Any]:
            async for response in implementation(await parse(raw, request_type, context), context):
                yield response

        return grpc.unary_stream_rpc_method_handler(stream, response_serializer=serialize)

    async def unary(raw: bytes, context: Context) -> Any:
        return await implementation(await parse(raw, request_type, context), context)

    return grpc.unary_unary_rpc_method_handler(unary, response_serializer=serialize)


def add_service(server: aio.Server, servicer: object, service: ServiceDescriptor) -> None:
    handlers = {
        method.name: _handler(method, getattr(servicer, method.name)) for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
