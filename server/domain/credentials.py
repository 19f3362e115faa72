"""Secrets (API keys, activation codes, instance secrets): made random, kept only as hashes.

The secrets are 256 random bits, so a single SHA-256 is enough to store them: there is nothing
to guess that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from cloudassist.server.domain import ids


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


# An API key an operator provides (--admin-key-file): the shape of the keys the server makes,
# `k-<id>.<secret>`, with a secret of 256 bits so that one SHA-256 is enough to store it.
_PROVIDED_KEY = re.compile(r"(k-[0-9a-z]{1,62})\.([0-9a-f]{64})")
PROVIDED_KEY_RULE = (
    "one line '<key id>.<secret>': a key id of k- and 1 to 62 lower-case letters or digits, a "
    "secret of 64 lower-case hex digits (256 random bits), e.g. "
    "k-$(openssl rand -hex 10).$(openssl rand -hex 32)"
)


def parse_provided_key(text: str) -> tuple[str, str]:
    """(key id, secret) of an API key an operator wrote (surrounding whitespace, such as a
    final newline, aside); ValueError naming the rule when it has another shape."""
    found = _PROVIDED_KEY.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"expected {PROVIDED_KEY_RULE}")
    return found.group(1), found.group(2)
