"""Schedules of periodic invocations: cron (Quartz with seconds, or plain 5-field), rate(), at().

    0 */20 * * * ?                       Quartz: sec min hour day-of-month month day-of-week
    0 0 12 ? * MON-FRI 2027 Asia/Shanghai  optional year, optional trailing time zone
    */5 * * * *                          plain cron: min hour day-of-month month day-of-week
    rate(30s) rate(5m) rate(2h) rate(1d)  fixed interval, first run when the invocation is made
    at(2026-11-22 10:00:00 GMT+8:00)     once

A time zone is an IANA name or GMT/UTC+H[:MM]; without one, the server's default applies.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from croniter import croniter

from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.timezones import parse_timezone

MIN_INTERVAL_SECONDS = 10
MAX_RATE_SECONDS = 7 * 86_400
# How many upcoming cron fire times are checked for the minimum interval.
_INTERVAL_SAMPLES = 64

BAD_CRON = "BadCronExpression"
CRON_EXPIRED = "CronExpressionExpired"
INVALID_RATE = "InvalidRateExpression"
RATE_TOO_LARGE = "RateFrequencyTooLarge"
INVALID_AT = "InvalidAtExpression"
AT_EXPIRED = "AtExpressionExpired"
INVALID_FREQUENCY = "InvalidParam.Frequency"
INVALID_TIMEZONE = "InvalidGMTOffsetForTimezone"

_RATE = re.compile(r"rate\(\s*(\d{1,9})\s*([smhd])\s*\)", re.IGNORECASE)
_AT = re.compile(
    r"at\(\s*(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\s+(\S+))?\s*\)", re.IGNORECASE
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DAY_NAMES = re.compile(r"[A-Za-z]{3}")
# A trailing token that names a time zone: `Asia/Shanghai`, `UTC`, `GMT+8:00`.
_ZONE_LIKE = re.compile(r"(?i)(?:GMT|UTC)\S*|[A-Za-z_]+(?:/[A-Za-z_+-]+)+")


def _bad(reason: str, message: str) -> InvalidArgument:
    return InvalidArgument(reason, f"frequency: {message}", field="frequency")


@dataclass(frozen=True)
class Schedule:
    """A parsed frequency. Times are milliseconds since the epoch."""

    kind: str  # cron | rate | at
    expression: str
    tz: tzinfo
    second_at_beginning: bool = False
    rate_ms: int = 0
    anchor_ms: int = 0  # rate: the first fire; at: the only fire

    @property
    def one_shot(self) -> bool:
        return self.kind == "at"

    @property
    def period_seconds(self) -> float | None:
        """The fixed period of a rate schedule."""
        return self.rate_ms / 1000 if self.kind == "rate" else None

    def next_after(self, after_ms: int) -> int | None:
        """The first fire time strictly after `after_ms`, or None when there is none."""
        if self.kind == "at":
            return self.anchor_ms if self.anchor_ms > after_ms else None
        if self.kind == "rate":
            if after_ms < self.anchor_ms:
                return self.anchor_ms
            periods = (after_ms - self.anchor_ms) // self.rate_ms + 1
            return self.anchor_ms + periods * self.rate_ms
        start = datetime.fromtimestamp(after_ms / 1000, self.tz)
        try:
            nxt = _cron(self.expression, start, self.second_at_beginning).get_next(datetime)
        except Exception:  # croniter raises when no time matches any more (a past year)
            return None
        return int(nxt.timestamp() * 1000)

    def first_fire(self, now_ms: int) -> int | None:
        """When a schedule made at `now_ms` first fires (a rate fires at once)."""
        if self.kind == "rate":
            return self.anchor_ms
        return self.next_after(now_ms)


def _cron(expression: str, start: datetime, second_at_beginning: bool) -> Any:
    return croniter(expression, start, second_at_beginning=second_at_beginning)


def _quartz_weekday(field: str) -> str:
    """Quartz numbers days of the week 1-7 from Sunday, croniter 0-6: shift the numbers.

    `6L` (last Friday) becomes croniter's `L5`; `2#1` (first Monday) becomes `1#1`.
    """
    if field in ("*", "?"):
        return field
    if field.upper() == "L":
        return "6"

    def shift(token: str) -> str:
        if not token or _DAY_NAMES.fullmatch(token):
            return token
        if not token.isdigit() or not 1 <= int(token) <= 7:
            raise _bad(BAD_CRON, f"day of week {token!r} is not 1-7 or SUN-SAT")
        return str(int(token) - 1)

    parts = []
    for item in field.split(","):
        if item.upper().endswith("L") and len(item) > 1:
            parts.append("L" + shift(item[:-1]))
        elif "#" in item:
            day, nth = item.split("#", 1)
            parts.append(f"{shift(day)}#{nth}")
        else:
            step = ""
            if "/" in item:
                item, step = item.split("/", 1)
                step = "/" + step
            bounds = item.split("-")
            parts.append("-".join(b if b == "*" else shift(b) for b in bounds) + step)
    return ",".join(parts)


def _split_timezone(tokens: list[str], default_tz: tzinfo) -> tuple[list[str], tzinfo]:
    if not tokens:
        return tokens, default_tz
    last = tokens[-1]
    try:
        # No cron field (numbers, *, ?, L, W, #, MON-SUN, JAN-DEC) is also a time zone name.
        return tokens[:-1], parse_timezone(last)
    except ValueError as exc:
        if _ZONE_LIKE.fullmatch(last):
            raise _bad(INVALID_TIMEZONE, f"unknown time zone {last!r}") from exc
    return tokens, default_tz


def _parse_cron(text: str, default_tz: tzinfo, now_ms: int) -> Schedule:
    tokens, tz = _split_timezone(text.split(), default_tz)
    if len(tokens) == 5:
        expression, seconds = " ".join(tokens), False
    elif len(tokens) in (6, 7):
        fields = list(tokens)
        fields[5] = _quartz_weekday(fields[5])
        expression, seconds = " ".join(fields), True
    else:
        raise _bad(
            BAD_CRON,
            f"{text!r} has {len(tokens)} fields; a cron expression has 5 (minute hour "
            "day-of-month month day-of-week) or 6-7 (second first, optional year), then an "
            "optional time zone",
        )
    if not croniter.is_valid(expression, second_at_beginning=seconds):
        raise _bad(BAD_CRON, f"{text!r} is not a valid cron expression")
    schedule = Schedule("cron", expression, tz, second_at_beginning=seconds)
    times: list[int] = []
    cursor = now_ms
    for _ in range(_INTERVAL_SAMPLES):
        nxt = schedule.next_after(cursor)
        if nxt is None:
            break
        times.append(nxt)
        cursor = nxt
    if not times:
        raise _bad(CRON_EXPIRED, f"{text!r} never fires again")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    if gaps and min(gaps) < MIN_INTERVAL_SECONDS * 1000:
        raise _bad(
            INVALID_FREQUENCY,
            f"{text!r} fires {min(gaps) / 1000:g} s apart; the minimum interval is "
            f"{MIN_INTERVAL_SECONDS} s",
        )
    return schedule


def _parse_rate(match: re.Match[str], timeout_seconds: int, now_ms: int) -> Schedule:
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if seconds < MIN_INTERVAL_SECONDS:
        raise _bad(
            INVALID_FREQUENCY,
            f"rate of {seconds} s is shorter than the minimum interval of {MIN_INTERVAL_SECONDS} s",
        )
    if seconds > MAX_RATE_SECONDS:
        raise _bad(RATE_TOO_LARGE, f"rate of {seconds} s is longer than 7 days")
    if seconds <= timeout_seconds:
        raise _bad(
            INVALID_FREQUENCY,
            f"rate of {seconds} s must be longer than the timeout of {timeout_seconds} s",
        )
    return Schedule("rate", match.group(0), parse_timezone("UTC"), rate_ms=seconds * 1000,
                    anchor_ms=now_ms)  # fmt: skip


def _parse_at(match: re.Match[str], default_tz: tzinfo, now_ms: int) -> Schedule:
    day, clock, zone = match.groups()
    try:
        tz = parse_timezone(zone) if zone else default_tz
    except ValueError as exc:
        raise _bad(INVALID_TIMEZONE, f"unknown time zone {zone!r}") from exc
    try:
        when = datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz)
    except ValueError as exc:
        raise _bad(INVALID_AT, f"{match.group(0)!r} is not a valid date and time") from exc
    at_ms = int(when.timestamp() * 1000)
    if at_ms <= now_ms:
        raise _bad(AT_EXPIRED, f"{match.group(0)!r} is in the past")
    return Schedule("at", match.group(0), tz, anchor_ms=at_ms)


def parse_frequency(text: str, default_tz: tzinfo, now_ms: int, timeout_seconds: int) -> Schedule:
    """Parses and checks a frequency; InvalidArgument names the rule it breaks."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered.startswith("rate"):
        match = _RATE.fullmatch(stripped)
        if match is None:
            raise _bad(INVALID_RATE, f"{text!r} is not rate(N<unit>) with a unit of s, m, h or d")
        return _parse_rate(match, timeout_seconds, now_ms)
    if lowered.startswith("at"):
        match = _AT.fullmatch(stripped)
        if match is None:
            raise _bad(INVALID_AT, f"{text!r} is not at(YYYY-MM-DD HH:MM:SS [time zone])")
        return _parse_at(match, default_tz, now_ms)
    return _parse_cron(stripped, default_tz, now_ms)
