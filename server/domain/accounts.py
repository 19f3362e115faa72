"""Accounts, API keys, activations and audit events as the domain sees them."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument

_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_REGISTRATIONS = 1000
MAX_ACTIVATION_SECONDS = 30 * 86_400
DEFAULT_ACTIVATION_SECONDS = 86_400


@dataclass(frozen=True)
class Principal:
    """Who is calling: the account and the API key it authenticated with."""

    account_id: str
    key_id: str
    admin: bool


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    admin: bool
    created_ms: int


@dataclass(frozen=True)
class ApiKeyInfo:
    key_id: str
    account_id: str
    description: str
    created_ms: int
    revoked_ms: int | None


@dataclass(frozen=True)
class ActivationInfo:
    activation_id: str
    account_id: str
    region_id: str
    description: str
    max_registrations: int
    registrations: int
    expires_ms: int
    created_ms: int


@dataclass(frozen=True)
class AuditEntry:
    event_id: str
    time_ms: int
    account_id: str
    key_id: str
    method: str
    resource_ids: tuple[str, ...]
    code: str
    peer: str


@dataclass
class AuditTicket:
    """The audit row of a successful mutating call, offered to the call's own transaction:
    the call that writes it there marks it `written`, and the guard then writes nothing."""

    entry: AuditEntry  # code OK, the request's resource ids
    written: bool = False


def naming_also(entry: AuditEntry, *resource_ids: str) -> AuditEntry:
    """The entry with the ids a call made (its response's) after those of its request."""
    ids = tuple(dict.fromkeys((*entry.resource_ids, *resource_ids)))
    return replace(entry, resource_ids=ids)


def check_account_name(name: str) -> str:
    if not _ACCOUNT_NAME.fullmatch(name):
        raise InvalidArgument(
            reasons.INVALID_ACCOUNT_NAME,
            "name: 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '-', starting with a letter "
            "or digit",
            field="name",
        )
    return name


def check_activation(
    max_registrations: int, expires_ms: int | None, now_ms: int
) -> tuple[int, int]:
    """The registration limit (0 means 1) and expiry (None means 24 h) of a new activation."""
    if max_registrations == 0:
        max_registrations = 1
    if not 1 <= max_registrations <= MAX_REGISTRATIONS:
        raise InvalidArgument(
            reasons.INVALID_MAX_REGISTRATIONS,
            f"max_registrations: must be between 1 and {MAX_REGISTRATIONS}",
            field="max_registrations",
        )
    if expires_ms is None:
        return max_registrations, now_ms + DEFAULT_ACTIVATION_SECONDS * 1000
    if not now_ms < expires_ms <= now_ms + MAX_ACTIVATION_SECONDS * 1000:
        raise InvalidArgument(
            reasons.INVALID_EXPIRATION,
            "expiration_time: must be in the future and at most 30 days ahead",
            field="expiration_time",
        )
    return max_registrations, expires_ms
