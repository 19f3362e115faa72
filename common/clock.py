"""Wall-clock time in the unit the store keeps (milliseconds since the epoch)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
