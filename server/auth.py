"""Who is calling: API keys from metadata (cached until revoked), per-account rate limits."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from cloudassist.server.domain import reasons
from cloudassist.server.domain.accounts import AuditTicket, Principal
from cloudassist.server.domain.credentials import hash_secret, split_token
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
    secret_hash: str
    expires: float
    epoch: int


def _always() -> int | None:
    return 0


class Authenticator:
    """Checks API keys against the database, remembering good ones (key id and the hash of the
    secret) for a few seconds.

    A revoked key stops working at once: the server that revoked it forgets it (`forget`), and
    so do the others sharing the database, told through the bus (`forget_keys`). `epoch` says
    whether that telling works: None while the bus is not listening (then nothing is taken
    from the cache), and a new number each time it listens again (entries remembered before
    are dropped, since revocations may have been missed meanwhile). `cache_seconds` bounds how
    long an entry is used even so.
    """

    def __init__(
        self,
        db: Database,
        cache_seconds: float = 5.0,
        epoch: Callable[[], int | None] = _always,
    ) -> None:
        self._db = db
        self._ttl = cache_seconds
        self._epoch = epoch
        self._cache: dict[str, _Cached] = {}
        # Bumped by every forget: a check that read the key while one happened is not kept.
        self._forgets = 0

    async def authenticate(self, metadata: Iterable[tuple[str, Any]] | None) -> Principal:
        parts = split_token(bearer_token(metadata))
        if parts is None:
            raise Unauthenticated(
                reasons.INVALID_API_KEY, "authorization: an API key is '<key id>.<secret>'"
            )
        key_id, secret = parts
        secret_hash = hash_secret(secret)
        cached = self._cache.get(key_id)
        now = time.monotonic()
        epoch = self._epoch()
        if (
            cached is not None
            and epoch is not None
            and cached.epoch == epoch
            and cached.expires > now
            and hmac.compare_digest(cached.secret_hash, secret_hash)
        ):
            return cached.principal
        forgets = self._forgets
        found = await self._db.read(authenticate_key, key_id, secret)
        if epoch is not None and forgets == self._forgets:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = _Cached(found, secret_hash, now + self._ttl, epoch)
        return found

    def forget(self, key_id: str) -> None:
        self.forget_keys([key_id])

    def forget_keys(self, key_ids: Iterable[str]) -> None:
        self._forgets += 1
        for key_id in key_ids:
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
