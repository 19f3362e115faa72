"""AdminService: protobuf in, admin plane call, protobuf out. The guard admits admins only."""

from __future__ import annotations

from typing import Any

from grpc import aio

from cloudassist.server.api.convert import milliseconds, timestamp
from cloudassist.server.api.errors import unary_errors
from cloudassist.server.auth import principal
from cloudassist.server.domain.accounts import Account, ActivationInfo, ApiKeyInfo, AuditEntry
from cloudassist.server.planes.admin import AdminPlane
from cloudassist.v1 import admin_pb2 as pb
from cloudassist.v1 import admin_pb2_grpc

Context = aio.ServicerContext[Any, Any]


def account_to(account: Account) -> pb.Account:
    return pb.Account(
        account_id=account.account_id,
        name=account.name,
        admin=account.admin,
        creation_time=timestamp(account.created_ms),
    )


def key_to(key: ApiKeyInfo) -> pb.ApiKey:
    return pb.ApiKey(
        key_id=key.key_id,
        account_id=key.account_id,
        description=key.description,
        creation_time=timestamp(key.created_ms),
        revocation_time=timestamp(key.revoked_ms),
    )


def activation_to(activation: ActivationInfo) -> pb.Activation:
    return pb.Activation(
        activation_id=activation.activation_id,
        account_id=activation.account_id,
        region_id=activation.region_id,
        description=activation.description,
        max_registrations=activation.max_registrations,
        registrations=activation.registrations,
        expiration_time=timestamp(activation.expires_ms),
        creation_time=timestamp(activation.created_ms),
    )


def event_to(event: AuditEntry) -> pb.AuditEvent:
    return pb.AuditEvent(
        event_id=event.event_id,
        time=timestamp(event.time_ms),
        account_id=event.account_id,
        key_id=event.key_id,
        method=event.method,
        resource_ids=list(event.resource_ids),
        code=event.code,
        peer=event.peer,
    )


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, plane: AdminPlane) -> None:
        self._plane = plane

    @unary_errors
    async def CreateAccount(
        self, request: pb.CreateAccountRequest, context: Context
    ) -> pb.CreateAccountResponse:
        account = await self._plane.create_account(request.name, request.admin)
        return pb.CreateAccountResponse(account=account_to(account))

    @unary_errors
    async def ListAccounts(
        self, request: pb.ListAccountsRequest, context: Context
    ) -> pb.ListAccountsResponse:
        page = await self._plane.list_accounts(request.page_size, request.page_token)
        return pb.ListAccountsResponse(
            accounts=[account_to(a) for a in page.items],
            total_count=page.total_count,
            next_page_token=page.next_page_token,
        )

    @unary_errors
    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        key, token = await self._plane.create_api_key(
            principal(), request.account_id, request.description
        )
        return pb.CreateApiKeyResponse(key=key_to(key), token=token)

    @unary_errors
    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        page = await self._plane.list_api_keys(
            request.account_id, request.page_size, request.page_token
        )
        return pb.ListApiKeysResponse(
            keys=[key_to(k) for k in page.items],
            total_count=page.total_count,
            next_page_token=page.next_page_token,
        )

    @unary_errors
    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        await self._plane.revoke_api_key(request.key_id)
        return pb.RevokeApiKeyResponse()

    @unary_errors
    async def CreateActivation(
        self, request: pb.CreateActivationRequest, context: Context
    ) -> pb.CreateActivationResponse:
        expires = (
            milliseconds(request.expiration_time, "expiration_time")
            if request.HasField("expiration_time")
            else None
        )
        activation, code = await self._plane.create_activation(
            principal(),
            request.account_id,
            request.region_id,
            request.description,
            request.max_registrations,
            expires,
        )
        return pb.CreateActivationResponse(
            activation=activation_to(activation), activation_code=code
        )

    @unary_errors
    async def ListActivations(
        self, request: pb.ListActivationsRequest, context: Context
    ) -> pb.ListActivationsResponse:
        page = await self._plane.list_activations(request.page_size, request.page_token)
        return pb.ListActivationsResponse(
            activations=[activation_to(a) for a in page.items],
            total_count=page.total_count,
            next_page_token=page.next_page_token,
        )

    @unary_errors
    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        page = await self._plane.list_audit(
            request.account_id, request.method, request.page_size, request.page_token
        )
        return pb.ListAuditEventsResponse(
            events=[event_to(e) for e in page.items],
            total_count=page.total_count,
            next_page_token=page.next_page_token,
        )
