"""Resource identifiers that sort by creation time, so "newest first" is "largest id first"."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """`prefix-` + 10 characters of milliseconds since the epoch + 10 random characters."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{prefix}-{_base32(ms, 10)}{_base32(secrets.randbits(50), 10)}"


def command_id() -> str:
    return new_id("c")


def invoke_id() -> str:
    return new_id("t")


def record_id() -> str:
    return new_id("r")
