"""client_token bookkeeping: a retry returns what the first request created."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import AlreadyExists
from cloudassist.server.store.tables import IDEMPOTENCY


@dataclass(frozen=True)
class IdempotencyKey:
    account_id: str
    region_id: str
    operation: str
    client_token: str
    request_hash: str


def replay(conn: Connection, key: IdempotencyKey | None) -> dict[str, str] | None:
    """What the token's first request created, or None for a new token.

    Raises AlreadyExists when the token was used with a different request.
    """
    if key is None:
        return None
    row = conn.execute(
        select(IDEMPOTENCY.c.request_hash, IDEMPOTENCY.c.result).where(
            IDEMPOTENCY.c.account_id == key.account_id,
            IDEMPOTENCY.c.region_id == key.region_id,
            IDEMPOTENCY.c.operation == key.operation,
            IDEMPOTENCY.c.client_token == key.client_token,
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != key.request_hash:
        raise AlreadyExists(
            reasons.IDEMPOTENT_PARAMETER_MISMATCH,
            f"client_token: {key.client_token!r} was already used for a different "
            f"{key.operation} request",
            field="client_token",
        )
    result: dict[str, str] = json.loads(row.result)
    return result


def remember(
    conn: Connection, key: IdempotencyKey | None, result: dict[str, str], now_ms: int
) -> None:
    if key is None:
        return
    conn.execute(
        insert(IDEMPOTENCY).values(
            account_id=key.account_id,
            region_id=key.region_id,
            operation=key.operation,
            client_token=key.client_token,
            request_hash=key.request_hash,
            result=json.dumps(result),
            created_ms=now_ms,
        )
    )
