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
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc import aio

from cloudassist.server.api.errors import abort_with
from cloudassist.server.api.guard import Guard
from cloudassist.server.api.wire import check_wire_format
from cloudassist.server.auth import current_principal, pending_audit
from cloudassist.server.domain import reasons
from cloudassist.server.domain.accounts import Principal
from cloudassist.server.domain.errors import DomainError, InvalidArgument

Context = aio.ServicerContext[Any, Any]


def _nul_field(message: Message, prefix: str = "") -> str | None:
    """The first string field (path) holding a NUL character, which no database column takes."""
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if field.is_repeated else [value]
            if any("\x00" in v for v in values):
                return path
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if any(isinstance(x, str) and "\x00" in x for x in (key, item)):
                    return path
                if isinstance(item, Message) and _nul_field(item, path + "."):
                    return path
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if field.is_repeated else [value]:
                found = _nul_field(item, path + ".")
                if found:
                    return found
    return None


def decode(raw: bytes, request_type: type[Message]) -> Message:
    """The request, or InvalidArgument when it does not parse or holds NUL characters."""
    try:
        if raw and not request_type.DESCRIPTOR.fields:
            check_wire_format(raw)
        message = request_type.FromString(raw)
    except DecodeError as exc:
        raise InvalidArgument(
            reasons.MALFORMED_REQUEST,
            f"request: not a valid {request_type.DESCRIPTOR.full_name} message ({exc})",
        ) from exc
    # A NUL character in a string field is a 0x00 byte in the encoding: most messages have
    # none, and need no walk through their fields.
    field = _nul_field(message) if b"\x00" in raw else None
    if field is not None:
        raise InvalidArgument(
            reasons.INVALID_CHARACTER,
            f"{field}: must not contain NUL characters",
            field=field,
        )
    return message


async def parse(raw: bytes, request_type: type[Message], context: Context) -> Message:
    try:
        return decode(raw, request_type)
    except DomainError as error:
        await abort_with(context, error)


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
            # A message that does not parse raises InvalidArgument to whoever reads the
            # stream; the handler ends the call with it (aborting from a reader task while the
            # handler writes would race inside grpcio).
            async def parsed() -> AsyncIterator[Message]:
                async for raw in requests:
                    yield decode(raw, request_type)

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
        if not audited:
            return await implementation(request, context)
        peer = guard.peer(context)
        # A call whose transaction writes its own audit row (InvokeCommand, RunCommand) saves
        # a second write transaction; any other call, or a failure, is audited here.
        ticket = guard.ticket(who, full_name, request, peer)
        pending_audit.set(ticket)
        response = None
        code = "OK"
        try:
            response = await implementation(request, context)
            return response
        except BaseException:
            code = _code(context)
            raise
        finally:
            if not (ticket.written and code == "OK"):
                await guard.audit(who, full_name, request, response, code, peer)

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
