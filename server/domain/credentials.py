"""Secrets (API keys, activation codes, instance secrets): made random, kept only as hashes.

The secrets are 256 random bits, so a single SHA-256 is enough to store them: there is nothing
to guess that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from server.domain import ids


def new_secret() -> str:
    # Hex: safe in shells, URLs and command lines (a secret starting with "-" would read as
    # an option).
    return secrets.token_hex(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    return stored_hash is not None and hmac.compare_digest(hash_secret(secret), stored_hash)


def new_api_key() -> tuple[str, str, str]:
    """(key id, secret, token): clients send `authorization: Bearer <token>`."""
    key_id = ids.new_id("k")
    secret = new_secret()
    return key_id, secret, f"{key_id}.{secret}"


def split_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a `<key id>.<secret>` token, or None when it has another shape."""
    key_id, dot, secret = token.partition(".")
    if not dot or not key_id or not secret or len(token) > 256:
        return None
    return key_id, secret
