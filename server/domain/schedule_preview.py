"""The next fire times of a frequency, checked as InvokeCommand checks it (for the console's
preview before a periodic invocation is made; nothing is stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.fields import check_region, check_timeout
from cloudassist.server.domain.limits import Limits
from cloudassist.server.domain.schedule import parse_frequency

DEFAULT_COUNT = 5
MAX_COUNT = 50


@dataclass(frozen=True)
class FireTime:
    time_ms: int
    local_time: str  # in the schedule's time zone: "2026-12-01 15:00:00 +08:00"


@dataclass(frozen=True)
class Preview:
    fire_times: list[FireTime]
    time_zone: str


def zone_name(tz: tzinfo) -> str:
    """`Asia/Shanghai`, or a fixed offset as it was written (`UTC+08:00`)."""
    if isinstance(tz, ZoneInfo):
        return tz.key
    if isinstance(tz, timezone):
        return tz.tzname(None) or "UTC"
    return str(tz)


def _local(time_ms: int, tz: tzinfo) -> str:
    moment = datetime.fromtimestamp(time_ms / 1000, tz)
    offset = moment.strftime("%z")  # +0800
    return f"{moment:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:]}"


def preview_schedule(
    region_id: str,
    frequency: str,
    timeout_seconds: int | None,
    count: int,
    *,
    limits: Limits,
    default_timezone: tzinfo,
    now_ms: int,
) -> Preview:
    """Up to `count` (0: 5) fire times after `now_ms`; InvalidArgument names the field at
    fault with the reason InvokeCommand would give."""
    check_region(region_id)
    if not 0 <= count <= MAX_COUNT:
        raise InvalidArgument(
            reasons.INVALID_PREVIEW_COUNT,
            f"count: must be between 1 and {MAX_COUNT} (0 means {DEFAULT_COUNT}), not {count}",
            field="count",
        )
    timeout = (
        limits.default_timeout_seconds
        if timeout_seconds is None
        else check_timeout(timeout_seconds, limits)
    )
    if not frequency.strip():
        raise InvalidArgument(
            reasons.MISSING_FREQUENCY,
            "frequency: required for a periodic invocation",
            field="frequency",
        )
    schedule = parse_frequency(frequency, default_timezone, now_ms, timeout)
    # A rate has no zone of its own (its schedule reads UTC): show it in the default one.
    tz = default_timezone if schedule.kind == "rate" else schedule.tz
    times: list[int] = []
    fire = schedule.first_fire(now_ms)
    while fire is not None and len(times) < (count or DEFAULT_COUNT):
        times.append(fire)
        fire = schedule.next_after(fire)
    return Preview([FireTime(t, _local(t, tz)) for t in times], zone_name(tz))
