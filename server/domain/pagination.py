"""Page sizes and opaque page tokens (AIP-158): keyset pagination over time-ordered ids."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 50


@dataclass(frozen=True)
class Page:
    """Where a page starts (after `after_id`, in newest-first order) and how long it is."""

    size: int
    after_id: str | None
    fingerprint: str

    def next_token(self, last_id: str) -> str:
        return encode_token(self.fingerprint, last_id)


def _fingerprint(listing: str, filters: tuple[object, ...]) -> str:
    text = json.dumps([listing, *[str(f) for f in filters]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_token(fingerprint: str, last_id: str) -> str:
    raw = json.dumps({"f": fingerprint, "a": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_page(listing: str, filters: tuple[object, ...], page_size: int, page_token: str) -> Page:
    """Validates page_size (1 to 50, 0 means 10) and a token made for the same listing."""
    if page_size == 0:
        page_size = DEFAULT_PAGE_SIZE
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            reasons.INVALID_PAGE_SIZE,
            f"page_size: must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}), "
            f"not {page_size}",
            field="page_size",
        )
    fingerprint = _fingerprint(listing, filters)
    if not page_token:
        return Page(page_size, None, fingerprint)
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        token_fingerprint = decoded["f"]
        after_id = decoded["a"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError) as exc:
        raise InvalidArgument(
            reasons.INVALID_PAGE_TOKEN,
            "page_token: not a token returned by this listing",
            field="page_token",
        ) from exc
    if token_fingerprint != fingerprint or not isinstance(after_id, str) or "\x00" in after_id:
        raise InvalidArgument(
            reasons.INVALID_PAGE_TOKEN,
            "page_token: made for another listing or other filters; "
            "repeat the request that returned it with the same filters",
            field="page_token",
        )
    return Page(page_size, after_id, fingerprint)


_TIME_CURSOR = re.compile(r"([0-9]{1,15}):(.*)", re.DOTALL)


def split_time_cursor(after_id: str) -> tuple[int, str]:
    """(milliseconds, id) of a `<ms>:<id>` cursor (listings ordered by time, then id)."""
    match = _TIME_CURSOR.fullmatch(after_id)
    if match is None:
        raise InvalidArgument(
            reasons.INVALID_PAGE_TOKEN,
            "page_token: not a token returned by this listing",
            field="page_token",
        )
    return int(match.group(1)), match.group(2)
