"""Repository functions for accounts, API keys, activations, registrations and the audit trail."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from cloudassist.server.domain import ids, reasons
from cloudassist.server.domain.accounts import (
    Account,
    ActivationInfo,
    ApiKeyInfo,
    AuditEntry,
    Principal,
)
from cloudassist.server.domain.credentials import (
    hash_secret,
    new_api_key,
    new_secret,
    secret_matches,
)
from cloudassist.server.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from cloudassist.server.domain.model import OsType
from cloudassist.server.domain.pagination import Page
from cloudassist.server.store.locks import lock_scope
from cloudassist.server.store.tables import (
    ACCOUNTS,
    ACTIVATIONS,
    API_KEYS,
    AUDIT,
    INSTANCES,
    INVOCATION_INSTANCES,
    INVOCATIONS,
)

BOOTSTRAP_ACCOUNT = "admin"

# The PostgreSQL notification channel a revocation is announced on (server/fleet/bus.py).
KEY_REVOKED_CHANNEL = "ca_key_revoked"


def _account(row: Any) -> Account:
    return Account(row.account_id, row.name, bool(row.admin), row.created_ms)


def _key(row: Any) -> ApiKeyInfo:
    return ApiKeyInfo(row.key_id, row.account_id, row.description, row.created_ms, row.revoked_ms)


def _activation(row: Any) -> ActivationInfo:
    return ActivationInfo(
        row.activation_id,
        row.account_id,
        row.region_id,
        row.description,
        row.max_registrations,
        row.registrations,
        row.expires_ms,
        row.created_ms,
    )


def bootstrap_admin(conn: Connection, now_ms: int) -> str | None:
    """On an empty database: an admin account and a key for it. Returns the key's token."""
    # Servers starting together on a new PostgreSQL database: one of them creates it.
    lock_scope(conn, "bootstrap-admin")
    if conn.execute(select(func.count()).select_from(ACCOUNTS)).scalar_one():
        return None
    account_id = ids.new_id("a")
    conn.execute(
        insert(ACCOUNTS).values(
            account_id=account_id, name=BOOTSTRAP_ACCOUNT, admin=True, created_ms=now_ms
        )
    )
    key_id, secret, token = new_api_key()
    conn.execute(
        insert(API_KEYS).values(
            key_id=key_id,
            account_id=account_id,
            secret_hash=hash_secret(secret),
            description="created at first start",
            created_ms=now_ms,
        )
    )
    return token


def authenticate_key(conn: Connection, key_id: str, secret: str) -> Principal:
    row = conn.execute(
        select(API_KEYS.c.secret_hash, API_KEYS.c.account_id, ACCOUNTS.c.admin)
        .select_from(API_KEYS.join(ACCOUNTS, API_KEYS.c.account_id == ACCOUNTS.c.account_id))
        .where(API_KEYS.c.key_id == key_id, API_KEYS.c.revoked_ms.is_(None))
    ).first()
    if row is None or not secret_matches(secret, row.secret_hash):
        raise Unauthenticated(
            reasons.INVALID_API_KEY, "authorization: the API key is unknown, wrong or revoked"
        )
    return Principal(row.account_id, key_id, bool(row.admin))


def _require_account(conn: Connection, account_id: str) -> None:
    found = conn.execute(
        select(ACCOUNTS.c.account_id).where(ACCOUNTS.c.account_id == account_id)
    ).first()
    if found is None:
        raise NotFound(
            reasons.ACCOUNT_NOT_FOUND,
            f"account_id: no account {account_id!r}",
            field="account_id",
        )


def create_account(conn: Connection, name: str, admin: bool, now_ms: int) -> Account:
    taken = conn.execute(select(ACCOUNTS.c.account_id).where(ACCOUNTS.c.name == name)).first()
    if taken is not None:
        raise AlreadyExists(
            reasons.ACCOUNT_NAME_TAKEN, f"name: an account named {name!r} exists", field="name"
        )
    account = Account(ids.new_id("a"), name, admin, now_ms)
    conn.execute(
        insert(ACCOUNTS).values(
            account_id=account.account_id, name=name, admin=admin, created_ms=now_ms
        )
    )
    return account


def _page(
    conn: Connection,
    table: Any,
    key: Any,
    conditions: list[ColumnElement[bool]],
    page: Page,
) -> tuple[list[Any], int]:
    total = conn.execute(select(func.count()).select_from(table).where(*conditions)).scalar_one()
    if page.after_id is not None:
        conditions = [*conditions, key < page.after_id]
    rows = conn.execute(
        select(table).where(*conditions).order_by(key.desc()).limit(page.size + 1)
    ).all()
    return list(rows), total


def list_accounts(conn: Connection, page: Page) -> tuple[list[Account], int]:
    rows, total = _page(conn, ACCOUNTS, ACCOUNTS.c.account_id, [], page)
    return [_account(r) for r in rows], total


def create_api_key(
    conn: Connection, account_id: str, description: str, now_ms: int
) -> tuple[ApiKeyInfo, str]:
    _require_account(conn, account_id)
    key_id, secret, token = new_api_key()
    conn.execute(
        insert(API_KEYS).values(
            key_id=key_id,
            account_id=account_id,
            secret_hash=hash_secret(secret),
            description=description,
            created_ms=now_ms,
        )
    )
    return ApiKeyInfo(key_id, account_id, description, now_ms, None), token


def list_api_keys(conn: Connection, account_id: str, page: Page) -> tuple[list[ApiKeyInfo], int]:
    conditions = [API_KEYS.c.account_id == account_id] if account_id else []
    rows, total = _page(conn, API_KEYS, API_KEYS.c.key_id, conditions, page)
    return [_key(r) for r in rows], total


def revoke_api_key(conn: Connection, key_id: str, now_ms: int) -> None:
    result = conn.execute(
        update(API_KEYS)
        .where(API_KEYS.c.key_id == key_id, API_KEYS.c.revoked_ms.is_(None))
        .values(revoked_ms=now_ms)
    )
    if result.rowcount == 0:
        raise NotFound(reasons.KEY_NOT_FOUND, f"key_id: no active key {key_id!r}", field="key_id")
    if conn.dialect.name == "postgresql":
        # Sent on commit, to every server listening (the revoking one included): each drops
        # the key from its cache at once. No sender ("s"): every server acts on it.
        payload = json.dumps({"s": "", "i": [key_id]})
        conn.execute(select(func.pg_notify(KEY_REVOKED_CHANNEL, payload)))


def create_activation(
    conn: Connection,
    account_id: str,
    region_id: str,
    description: str,
    max_registrations: int,
    expires_ms: int,
    now_ms: int,
) -> tuple[ActivationInfo, str]:
    _require_account(conn, account_id)
    code = new_secret()
    activation = ActivationInfo(
        ids.new_id("act"), account_id, region_id, description, max_registrations, 0, expires_ms,
        now_ms,
    )  # fmt: skip
    conn.execute(
        insert(ACTIVATIONS).values(
            activation_id=activation.activation_id,
            account_id=account_id,
            region_id=region_id,
            code_hash=hash_secret(code),
            description=description,
            max_registrations=max_registrations,
            registrations=0,
            expires_ms=expires_ms,
            created_ms=now_ms,
        )
    )
    return activation, code


def list_activations(conn: Connection, page: Page) -> tuple[list[ActivationInfo], int]:
    rows, total = _page(conn, ACTIVATIONS, ACTIVATIONS.c.activation_id, [], page)
    return [_activation(r) for r in rows], total


def register_instance(
    conn: Connection,
    activation_id: str,
    code: str,
    requested_id: str,
    os_type: OsType,
    hostname: str,
    now_ms: int,
) -> tuple[str, str, str]:
    """Uses one registration of an activation. Returns (instance id, secret, region id).

    Registering an id that exists in the activation's account gives it a new secret (the old
    one stops working); an id of another account is ALREADY_EXISTS.
    """
    activation = conn.execute(
        select(ACTIVATIONS).where(ACTIVATIONS.c.activation_id == activation_id)
    ).first()
    if activation is None or not secret_matches(code, activation.code_hash):
        raise Unauthenticated(
            reasons.INVALID_ACTIVATION,
            "activation_code: no activation with this id and code",
            field="activation_code",
        )
    if activation.expires_ms <= now_ms:
        raise FailedPrecondition(
            reasons.ACTIVATION_EXPIRED,
            f"activation_id: activation {activation_id} has expired",
            field="activation_id",
        )
    if activation.registrations >= activation.max_registrations:
        raise ResourceExhausted(
            reasons.ACTIVATION_EXHAUSTED,
            f"activation_id: activation {activation_id} has been used "
            f"{activation.registrations} times, its limit",
            field="activation_id",
        )
    instance_id = requested_id or ids.new_id("i")
    existing = conn.execute(
        select(INSTANCES.c.account_id).where(INSTANCES.c.instance_id == instance_id)
    ).first()
    # An id another account used (even one since deregistered) stays theirs: its records
    # and schedules must never reach this account's agent.
    used_elsewhere = conn.execute(
        select(INVOCATION_INSTANCES.c.invoke_id)
        .select_from(
            INVOCATION_INSTANCES.join(
                INVOCATIONS, INVOCATIONS.c.invoke_id == INVOCATION_INSTANCES.c.invoke_id
            )
        )
        .where(
            INVOCATION_INSTANCES.c.instance_id == instance_id,
            INVOCATIONS.c.account_id != activation.account_id,
        )
        .limit(1)
    ).first()
    if (existing is not None and existing.account_id != activation.account_id) or used_elsewhere:
        raise AlreadyExists(
            reasons.INSTANCE_ID_TAKEN,
            f"instance_id: {instance_id!r} is registered already",
            field="instance_id",
        )
    secret = new_secret()
    values = {
        "account_id": activation.account_id,
        "region_id": activation.region_id,
        "secret_hash": hash_secret(secret),
        "activation_id": activation_id,
        "os_type": os_type.value,
        "hostname": hostname[:255],
    }
    if existing is None:
        conn.execute(
            insert(INSTANCES).values(
                instance_id=instance_id,
                online=False,
                registered_ms=now_ms,
                invocation_count=0,
                **values,
            )
        )
    else:
        conn.execute(
            update(INSTANCES).where(INSTANCES.c.instance_id == instance_id).values(**values)
        )
    used = conn.execute(
        update(ACTIVATIONS)
        .where(
            ACTIVATIONS.c.activation_id == activation_id,
            ACTIVATIONS.c.registrations < ACTIVATIONS.c.max_registrations,
        )
        .values(registrations=ACTIVATIONS.c.registrations + 1)
    )
    if used.rowcount != 1:  # another server used the last registration meanwhile
        raise ResourceExhausted(
            reasons.ACTIVATION_EXHAUSTED,
            f"activation_id: activation {activation_id} has no registrations left",
            field="activation_id",
        )
    return instance_id, secret, activation.region_id


_INSERT_AUDIT = insert(AUDIT)  # built once: every mutating call writes one


def record_audit(conn: Connection, entry: AuditEntry) -> None:
    conn.execute(
        _INSERT_AUDIT,
        {
            "event_id": entry.event_id,
            "time_ms": entry.time_ms,
            "account_id": entry.account_id,
            "key_id": entry.key_id,
            "method": entry.method,
            "resource_ids": json.dumps(list(entry.resource_ids)),
            "code": entry.code,
            "peer": entry.peer[:128],
        },
    )


def list_audit(
    conn: Connection, account_id: str, method: str, page: Page
) -> tuple[list[AuditEntry], int]:
    conditions: list[ColumnElement[bool]] = []
    if account_id:
        conditions.append(AUDIT.c.account_id == account_id)
    if method:
        conditions.append(AUDIT.c.method == method)
    rows, total = _page(conn, AUDIT, AUDIT.c.event_id, conditions, page)
    return [
        AuditEntry(
            r.event_id,
            r.time_ms,
            r.account_id,
            r.key_id,
            r.method,
            tuple(json.loads(r.resource_ids)),
            r.code,
            r.peer,
        )
        for r in rows
    ], total
