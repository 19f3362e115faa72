"""What every client call goes through before its servicer: authentication, the admin check,
the per-account rate limit; and after it, for mutating calls, the audit trail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from grpc import aio

from cloudassist.common.clock import now_ms
from cloudassist.server.api.forwarded import BridgeTrust
from cloudassist.server.auth import Authenticator, RateLimiter
from cloudassist.server.domain import ids as ids_module
from cloudassist.server.domain import reasons
from cloudassist.server.domain.accounts import AuditEntry, AuditTicket, Principal
from cloudassist.server.domain.errors import PermissionDenied

MUTATING_PREFIXES = (
    "Create", "Modify", "Delete", "Invoke", "Run", "Rerun", "Stop", "Revoke", "Deregister", "Tag",
    "Untag",
)  # fmt: skip


def resource_ids(*messages: Message | None) -> tuple[str, ...]:
    """The `*_id` and `*_ids` values of messages and of their direct sub-messages."""
    found: list[str] = []

    def collect(message: Message, depth: int) -> None:
        for field, value in message.ListFields():
            if field.name == "region_id":
                continue
            if field.name.endswith("_id") and isinstance(value, str):
                found.append(value)
            elif field.name.endswith("_ids") and field.type == FieldDescriptor.TYPE_STRING:
                found.extend(value)
            elif (
                depth == 0
                and field.type == FieldDescriptor.TYPE_MESSAGE
                and isinstance(value, Message)
            ):
                collect(value, 1)

    for message in messages:
        if message is not None:
            collect(message, 0)
    return tuple(dict.fromkeys(found))


@dataclass
class Guard:
    authenticator: Authenticator
    limiter: RateLimiter
    record: Callable[[AuditEntry], Awaitable[None]]
    admin_only: bool = False
    # Set when the console's bridge forwards calls: the audit names the browser.
    bridge: BridgeTrust | None = None

    def peer(self, context: aio.ServicerContext[Any, Any]) -> str:
        peer = context.peer()
        if self.bridge is None:
            return peer
        return self.bridge.peer(peer, context.invocation_metadata())

    async def admit(self, context: aio.ServicerContext[Any, Any]) -> Principal:
        who = await self.authenticator.authenticate(context.invocation_metadata())
        if self.admin_only and not who.admin:
            raise PermissionDenied(
                reasons.NOT_ADMIN, "this call needs the API key of an admin account"
            )
        self.limiter.admit(who.account_id)
        return who

    @staticmethod
    def audits(method_name: str) -> bool:
        return method_name.startswith(MUTATING_PREFIXES)

    def ticket(self, who: Principal, method: str, request: Message, peer: str) -> AuditTicket:
        """The audit row of this call if it succeeds, for the call's own transaction."""
        return AuditTicket(self._entry(who, method, resource_ids(request), "OK", peer))

    @staticmethod
    def _entry(
        who: Principal, method: str, ids: tuple[str, ...], code: str, peer: str
    ) -> AuditEntry:
        return AuditEntry(
            event_id=ids_module.new_id("e"),
            time_ms=now_ms(),
            account_id=who.account_id,
            key_id=who.key_id,
            method=method,
            resource_ids=ids,
            code=code,
            peer=peer,
        )

    async def audit(
        self,
        who: Principal,
        method: str,
        request: Message,
        response: Message | None,
        code: str,
        peer: str,
    ) -> None:
        await self.record(self._entry(who, method, resource_ids(request, response), code, peer))
