"""Who is calling: API keys from metadata (cached briefly), per-account rate limits."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from cloudassist.server.domain import reasons
from cloudassist.server.domain.accounts import AuditTicket, Principal
from cloudassist.server.domain.credentials import split_token
from cloudassist.server.domain.errors import ResourceExhausted, Unauthenticated
from cloudassist.server.store.database import Database
from cloudassist.server.store.security import authenticate_key

# The principal of the call being handled (set by the guard in the handler's own task).
current_principal: ContextVar[Principal] = ContextVar("current_principal")


# The audit row a mutating call may write in its own transaction (set by the guard).
pending_audit: ContextVar[AuditTicket | None] = ContextVar("pending_audit", default=None)


def principal() -> Principal:
    return current_principal.get()


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise Unauthenticated(
        reasons.MISSING_API_KEY,
        "authorization: send an API key as metadata 'authorization: Bearer <key id>.<secret>'",
    )


@dataclass
class _Cached:
    principal: Principal
    secret: str
    expires: float


class Authenticator:
    """Checks API keys against the database, remembering good ones for a few seconds.

    A key revoked through this server stops working at once (`forget`); on other servers
    sharing the database, within `cache_seconds`.
    """

    def __init__(self, db: Database, cache_seconds: float = 5.0) -> None:
        self._db = db
        self._ttl = cache_seconds
        self._cache: dict[str, _Cached] = {}

    async def authenticate(self, metadata: Iterable[tuple[str, Any]] | None) -> Principal:
        parts = split_token(bearer_token(metadata))
        if parts is None:
            raise Unauthenticated(
                reasons.INVALID_API_KEY, "authorization: an API key is '<key id>.<secret>'"
            )
        key_id, secret = parts
        cached = self._cache.get(key_id)
        now = time.monotonic()
        if (
            cached is not None
            and cached.expires > now
            and hmac.compare_digest(cached.secret, secret)
        ):
            return cached.principal
        found = await self._db.read(authenticate_key, key_id, secret)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = _Cached(found, secret, now + self._ttl)
        return found

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)


class RateLimiter:
    """A token bucket per account: `rate` requests a second, bursts of `burst`."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}  # account -> (tokens, last time)

    def admit(self, account_id: str) -> None:
        if self._rate <= 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(account_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[account_id] = (tokens, now)
            wait = (1.0 - tokens) / self._rate
            raise ResourceExhausted(
                reasons.THROTTLED,
                f"too many requests for this account: at most {self._rate:g} a second "
                f"(bursts of {self._burst:g}); retry in {wait:.2f} s",
                retry_after_seconds=wait,
            )
        self._buckets[account_id] = (tokens - 1.0, now)
