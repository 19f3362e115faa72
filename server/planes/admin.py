"""What each AdminService call does, without gRPC: accounts, keys, activations, audit."""

from __future__ import annotations

from cloudassist.common.clock import now_ms
from cloudassist.server.auth import Authenticator
from cloudassist.server.domain.accounts import (
    Account,
    ActivationInfo,
    ApiKeyInfo,
    AuditEntry,
    Principal,
    check_account_name,
    check_activation,
)
from cloudassist.server.domain.fields import check_region
from cloudassist.server.domain.pagination import parse_page
from cloudassist.server.planes.listing import Listing, listing
from cloudassist.server.store import security
from cloudassist.server.store.database import Database


class AdminPlane:
    def __init__(self, db: Database, authenticator: Authenticator) -> None:
        self._db = db
        self._authenticator = authenticator

    async def create_account(self, name: str, admin: bool) -> Account:
        return await self._db.write(
            security.create_account, check_account_name(name), admin, now_ms()
        )

    async def list_accounts(self, page_size: int, page_token: str) -> Listing[Account]:
        page = parse_page("accounts", (), page_size, page_token)
        items, total = await self._db.read(security.list_accounts, page)
        return listing(page, items, total, lambda a: a.account_id)

    async def create_api_key(
        self, caller: Principal, account_id: str, description: str
    ) -> tuple[ApiKeyInfo, str]:
        return await self._db.write(
            security.create_api_key, account_id or caller.account_id, description[:256], now_ms()
        )

    async def list_api_keys(
        self, account_id: str, page_size: int, page_token: str
    ) -> Listing[ApiKeyInfo]:
        page = parse_page("keys", (account_id,), page_size, page_token)
        items, total = await self._db.read(security.list_api_keys, account_id, page)
        return listing(page, items, total, lambda k: k.key_id)

    async def revoke_api_key(self, key_id: str) -> None:
        await self._db.write(security.revoke_api_key, key_id, now_ms())
        self._authenticator.forget(key_id)

    async def create_activation(
        self,
        caller: Principal,
        account_id: str,
        region_id: str,
        description: str,
        max_registrations: int,
        expires_ms: int | None,
    ) -> tuple[ActivationInfo, str]:
        now = now_ms()
        limit, expiry = check_activation(max_registrations, expires_ms, now)
        return await self._db.write(
            security.create_activation,
            account_id or caller.account_id,
            check_region(region_id),
            description[:256],
            limit,
            expiry,
            now,
        )

    async def list_activations(self, page_size: int, page_token: str) -> Listing[ActivationInfo]:
        page = parse_page("activations", (), page_size, page_token)
        items, total = await self._db.read(security.list_activations, page)
        return listing(page, items, total, lambda a: a.activation_id)

    async def list_audit(
        self, account_id: str, method: str, page_size: int, page_token: str
    ) -> Listing[AuditEntry]:
        page = parse_page("audit", (account_id, method), page_size, page_token)
        items, total = await self._db.read(security.list_audit, account_id, method, page)
        return listing(page, items, total, lambda e: e.event_id)

    async def record(self, entry: AuditEntry) -> None:
        await self._db.write(security.record_audit, entry)
