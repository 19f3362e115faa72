"""Who is really calling when a call comes from the console's gRPC-Web bridge.

The bridge forwards each browser call over a private Unix socket, naming the browser's address
in metadata. That metadata is believed only on a Unix-socket call that also carries the token
the bridge was given at start (known to this process only): on any other call it is whatever
the client chose to send.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FORWARDED_FOR = "x-forwarded-for"
BRIDGE_TOKEN = "x-cloudassist-bridge"


def _value(metadata: Iterable[tuple[str, Any]] | None, name: str) -> str:
    for key, value in metadata or ():
        if key.lower() == name:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return ""


@dataclass(frozen=True)
class BridgeTrust:
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def metadata(self, browser_peer: str) -> list[tuple[str, str]]:
        """What the bridge adds to a call it forwards for a browser at `browser_peer`."""
        return [(FORWARDED_FOR, browser_peer), (BRIDGE_TOKEN, self.token)]

    def peer(self, transport_peer: str, metadata: Iterable[tuple[str, Any]] | None) -> str:
        """The browser's address with "(console)" for a call the bridge forwarded, else the
        transport's peer."""
        if not transport_peer.startswith("unix:"):
            return transport_peer
        items = list(metadata or ())
        forwarded = _value(items, FORWARDED_FOR)
        if forwarded and hmac.compare_digest(_value(items, BRIDGE_TOKEN), self.token):
            return f"{forwarded} (console)"
        return transport_peer
