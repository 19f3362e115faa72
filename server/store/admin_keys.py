"""Admin keys that do not depend on one server's data directory: a key the operator provides
(`--admin-key-file`), registered by every server that starts with it, and a new key issued
straight into the database (`cloudassist-server admin-key`), the way back in when every admin
key is lost."""

from __future__ import annotations

import enum

from sqlalchemy import Connection, insert, select

from cloudassist.server.domain import ids
from cloudassist.server.domain.accounts import Account, ApiKeyInfo, AuditEntry
from cloudassist.server.domain.credentials import hash_secret, new_api_key, secret_matches
from cloudassist.server.store.locks import lock_scope
from cloudassist.server.store.security import BOOTSTRAP_ACCOUNT, record_audit
from cloudassist.server.store.tables import ACCOUNTS, API_KEYS

# The audit trail's `method` of what these functions do (they are not RPCs).
PROVIDED_KEY_METHOD = "cloudassist-server --admin-key-file"
ISSUED_KEY_METHOD = "cloudassist-server admin-key"


class ProvidedKey(enum.Enum):
    """What became of the key of --admin-key-file."""

    # The database had no admin account: the admin account was created with this key.
    CREATED_ADMIN = "created the admin account with it"
    # Registered for the existing admin account.
    REGISTERED = "registered it for the admin account"
    # Registered before (by this server or another one with the same file).
    KNOWN = "it is a key of the admin account"
    # Registered before, then revoked: it stays revoked.
    REVOKED = "it was revoked: it is not accepted; put a new key in the file"


class ProvidedKeyError(Exception):
    """The key of --admin-key-file cannot be an admin key: its key id is another key's."""


def admin_account(conn: Connection) -> Account | None:
    """The account admin keys are for: the first-start admin account (named `admin`), or
    else the oldest admin account."""
    row = conn.execute(
        select(ACCOUNTS)
        .where(ACCOUNTS.c.admin.is_(True))
        .order_by((ACCOUNTS.c.name != BOOTSTRAP_ACCOUNT), ACCOUNTS.c.created_ms)
        .limit(1)
    ).first()
    return None if row is None else Account(row.account_id, row.name, True, row.created_ms)


def _admin_account_or_new(conn: Connection, now_ms: int) -> tuple[Account, bool]:
    """The admin account, made (as at first start) when there is none; and whether it was."""
    account = admin_account(conn)
    if account is not None:
        return account, False
    account = Account(ids.new_id("a"), BOOTSTRAP_ACCOUNT, True, now_ms)
    conn.execute(
        insert(ACCOUNTS).values(
            account_id=account.account_id, name=account.name, admin=True, created_ms=now_ms
        )
    )
    return account, True


def _audit(
    conn: Connection, account_id: str, key_id: str, method: str, peer: str, now: int
) -> None:
    record_audit(
        conn,
        AuditEntry(ids.new_id("e"), now, account_id, key_id, method, (key_id,), "OK", peer),
    )


def register_provided_key(
    conn: Connection, key_id: str, secret: str, now_ms: int, peer: str
) -> ProvidedKey:
    """Makes `key_id.secret` a key of the admin account, once: on a new database it creates
    the admin account with it (and no other key); on one with an admin account it adds the
    key unless that key id is there already. Idempotent, so every server started with the
    same file may run it. A revoked key stays revoked; a key id that is another key's (another
    secret, or not an admin's) raises ProvidedKeyError."""
    # Servers starting together on one PostgreSQL database: one at a time, as at first start.
    lock_scope(conn, "bootstrap-admin")
    existing = conn.execute(
        select(API_KEYS.c.secret_hash, API_KEYS.c.revoked_ms, ACCOUNTS.c.admin)
        .select_from(API_KEYS.join(ACCOUNTS, API_KEYS.c.account_id == ACCOUNTS.c.account_id))
        .where(API_KEYS.c.key_id == key_id)
    ).first()
    if existing is not None:
        if not secret_matches(secret, existing.secret_hash) or not existing.admin:
            raise ProvidedKeyError(
                f"key id {key_id} is another key's already: give the file another key id"
            )
        return ProvidedKey.KNOWN if existing.revoked_ms is None else ProvidedKey.REVOKED
    account, created = _admin_account_or_new(conn, now_ms)
    conn.execute(
        insert(API_KEYS).values(
            key_id=key_id,
            account_id=account.account_id,
            secret_hash=hash_secret(secret),
            description="from --admin-key-file",
            created_ms=now_ms,
        )
    )
    _audit(conn, account.account_id, key_id, PROVIDED_KEY_METHOD, peer, now_ms)
    return ProvidedKey.CREATED_ADMIN if created else ProvidedKey.REGISTERED


def issue_admin_key(
    conn: Connection, description: str, now_ms: int, peer: str
) -> tuple[Account, ApiKeyInfo, str]:
    """A new key of the admin account (made when there is none yet), with its audit event.
    Returns the account, the key and its token (shown only this once)."""
    lock_scope(conn, "bootstrap-admin")
    account, _ = _admin_account_or_new(conn, now_ms)
    key_id, secret, token = new_api_key()
    conn.execute(
        insert(API_KEYS).values(
            key_id=key_id,
            account_id=account.account_id,
            secret_hash=hash_secret(secret),
            description=description,
            created_ms=now_ms,
        )
    )
    _audit(conn, account.account_id, key_id, ISSUED_KEY_METHOD, peer, now_ms)
    return account, ApiKeyInfo(key_id, account.account_id, description, now_ms, None), token
