"""Time zones as the product writes them: IANA names, or fixed offsets like UTC+08:00 / GMT+8:00."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_OFFSET = re.compile(r"(?:UTC|GMT)(?:([+-])(\d{1,2})(?::?(\d{2}))?)?", re.IGNORECASE)


def parse_timezone(text: str) -> tzinfo:
    """`Asia/Shanghai`, `UTC`, `UTC+08:00`, `GMT+8:00`, `GMT-3`; ValueError otherwise."""
    match = _OFFSET.fullmatch(text.strip())
    if match:
        sign, hours, minutes = match.groups()
        if sign is None:
            return UTC
        h, m = int(hours), int(minutes or 0)
        if h > 14 or m > 59:
            raise ValueError(f"time zone offset out of range: {text!r}")
        delta = timedelta(hours=h, minutes=m)
        return timezone(-delta if sign == "-" else delta, name=text.strip())
    try:
        return ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # a zone directory is an OSError
        raise ValueError(f"unknown time zone: {text!r}") from exc


def day_start_ms(now_ms: int, tz: tzinfo) -> int:
    """The start of the calendar day that contains `now_ms`, in `tz`."""
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(start.timestamp() * 1000)
