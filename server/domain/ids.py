"""Resource identifiers that sort by creation time, so "newest first" is "largest id first"."""

from __future__ import annotations

import base64
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
# base64.b32encode (in C) writes RFC 4648 letters; this maps them to Crockford's.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """`prefix-` + 10 characters of milliseconds since the epoch + 10 random characters."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    # 50 bits of time, then 50 random bits, in 15 bytes: 24 characters whose first 4 are the
    # 20 leading zero bits.
    value = ((ms & (2**50 - 1)) << 50) | secrets.randbits(50)
    encoded = base64.b32encode(value.to_bytes(15, "big")).translate(_TO_CROCKFORD)
    return f"{prefix}-{encoded[4:].decode()}"


def command_id() -> str:
    return new_id("c")


def invoke_id() -> str:
    return new_id("t")


def record_id() -> str:
    return new_id("r")
