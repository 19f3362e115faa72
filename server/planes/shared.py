"""What the command-side planes share: their settings, how they read a frequency, and the
idempotency key of a request that carries a client_token."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import tzinfo

from cloudassist.common.clock import now_ms
from cloudassist.server.domain.fields import check_client_token
from cloudassist.server.domain.limits import Limits
from cloudassist.server.domain.schedule import Schedule, parse_frequency
from cloudassist.server.store.idempotency import IdempotencyKey


@dataclass(frozen=True)
class PlaneSettings:
    limits: Limits
    default_timezone: tzinfo
    delivery_timeout_seconds: float = 60.0
    # How long a STOPPING record waits for the agent to confirm the kill.
    stop_grace_seconds: float = 15.0
    # How long watchers wait for an agent's last output after the server ended a record.
    output_grace_seconds: float = 10.0


class Schedules:
    """Periodic invocations' schedules, read in the server's default time zone."""

    def __init__(self, default_timezone: tzinfo) -> None:
        self._default_timezone = default_timezone
        # Told when an invocation's next fire time is set or changed (the scheduler sleeps
        # until the earliest one it knows).
        self.changed: Callable[[], None] = lambda: None

    def schedule_for(self, frequency: str, timeout_seconds: int, created_ms: int) -> Schedule:
        """The schedule of a periodic invocation made at `created_ms`."""
        return parse_frequency(frequency, self._default_timezone, created_ms, timeout_seconds)

    def check_frequency(self, frequency: str, timeout_seconds: int) -> None:
        self.schedule_for(frequency, timeout_seconds, now_ms())


def idempotency_key(
    account_id: str,
    region_id: str,
    operation: str,
    client_token: str,
    *request: object,
) -> IdempotencyKey | None:
    """The key a retry of this request finds its first result under (None: no client_token)."""
    check_client_token(client_token)
    if not client_token:
        return None
    return IdempotencyKey(account_id, region_id, operation, client_token, _request_hash(*request))


def _request_hash(*parts: object) -> str:
    def default(value: object) -> object:
        if isinstance(value, bytes):
            return base64.b64encode(value).decode()
        raise TypeError(type(value))

    text = json.dumps(
        [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts],  # type: ignore[call-overload]
        sort_keys=True,
        default=default,
    )
    return hashlib.sha256(text.encode()).hexdigest()
