"""Frequencies of periodic invocations (server/domain/schedule.py): cron, rate(), at()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

import pytest

from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.schedule import (
    AT_EXPIRED,
    BAD_CRON,
    CRON_EXPIRED,
    INVALID_AT,
    INVALID_FREQUENCY,
    INVALID_RATE,
    INVALID_TIMEZONE,
    RATE_TOO_LARGE,
    Schedule,
    parse_frequency,
)
from cloudassist.server.domain.timezones import parse_timezone

# Tuesday 2026-03-10 09:07:13 UTC: a fixed instant, never the wall clock.
NOW_DT = datetime(2026, 3, 10, 9, 7, 13, tzinfo=UTC)
UTC8 = parse_timezone("UTC+08:00")
TIMEOUT_S = 5
MINUTE_MS = 60_000


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


NOW = _ms(NOW_DT)


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return _ms(datetime(year, month, day, hour, minute, second, tzinfo=UTC))


def parse(
    text: str, default_tz: tzinfo = UTC, now_ms: int = NOW, timeout_seconds: int = TIMEOUT_S
) -> Schedule:
    return parse_frequency(text, default_tz, now_ms, timeout_seconds)


def fires(schedule: Schedule, count: int, now_ms: int = NOW) -> list[int]:
    """The first `count` fire times of a schedule made at `now_ms`."""
    times: list[int] = []
    nxt = schedule.first_fire(now_ms)
    while nxt is not None and len(times) < count:
        times.append(nxt)
        nxt = schedule.next_after(nxt)
    return times


def local(times: list[int], tz: tzinfo) -> list[datetime]:
    return [datetime.fromtimestamp(t / 1000, tz) for t in times]


def rejected(
    text: str,
    reason: str,
    default_tz: tzinfo = UTC,
    now_ms: int = NOW,
    timeout_seconds: int = TIMEOUT_S,
) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        parse_frequency(text, default_tz, now_ms, timeout_seconds)
    assert caught.value.reason == reason, caught.value.message
    assert caught.value.field == "frequency"
    return caught.value


# --- cron: fire times ---


def test_quartz_every_20_minutes_in_utc_plus_8_gives_the_next_three_fires_exactly() -> None:
    schedule = parse("0 */20 * * * ?", default_tz=UTC8)
    assert schedule.kind == "cron"
    # NOW is 17:07:13 in UTC+08:00: the next slots are 17:20, 17:40 and 18:00 there.
    assert fires(schedule, 3) == [
        _utc(2026, 3, 10, 9, 20),
        _utc(2026, 3, 10, 9, 40),
        _utc(2026, 3, 10, 10, 0),
    ]
    assert fires(schedule, 3) == [1773134400000, 1773135600000, 1773136800000]


def test_plain_five_field_cron_fires_every_five_minutes() -> None:
    schedule = parse("*/5 * * * *")
    assert not schedule.second_at_beginning
    assert fires(schedule, 3) == [
        _utc(2026, 3, 10, 9, 10),
        _utc(2026, 3, 10, 9, 15),
        _utc(2026, 3, 10, 9, 20),
    ]


def test_next_after_is_strictly_after_a_fire_time() -> None:
    schedule = parse("0 * * * * ?")
    slot = _utc(2026, 3, 10, 9, 8)
    assert schedule.next_after(slot - 1) == slot
    assert schedule.next_after(slot) == slot + MINUTE_MS
    assert schedule.next_after(slot + 500) == slot + MINUTE_MS


def test_cron_without_a_zone_uses_the_default_zone() -> None:
    schedule = parse("0 0 12 * * ?", default_tz=UTC8)
    assert fires(schedule, 2) == [_utc(2026, 3, 11, 4), _utc(2026, 3, 12, 4)]


def test_trailing_iana_zone_overrides_the_default() -> None:
    schedule = parse("0 0 12 * * ? Asia/Tokyo", default_tz=UTC8)
    # 12:00 in Tokyo (UTC+9) is 03:00 UTC; NOW is already past 12:00 Tokyo on the 10th.
    assert fires(schedule, 2) == [_utc(2026, 3, 11, 3), _utc(2026, 3, 12, 3)]


def test_trailing_gmt_offset_zone() -> None:
    schedule = parse("0 0 12 * * ? GMT+8:00")
    assert fires(schedule, 2) == [_utc(2026, 3, 11, 4), _utc(2026, 3, 12, 4)]


def test_trailing_zone_after_a_plain_five_field_cron() -> None:
    schedule = parse("30 12 * * * Asia/Tokyo")
    assert fires(schedule, 1) == [_utc(2026, 3, 11, 3, 30)]


def test_trailing_iana_zone_with_an_offset_in_its_name() -> None:
    # Etc/GMT-8 is an IANA zone (UTC+08:00); at() accepts it, so a cron must too.
    schedule = parse("0 0 12 * * ? Etc/GMT-8")
    assert fires(schedule, 1) == [_utc(2026, 3, 11, 4)]


def test_optional_year_never_fires_before_that_year() -> None:
    schedule = parse("0 0 12 * * ? 2027")
    assert fires(schedule, 2) == [_utc(2027, 1, 1, 12), _utc(2027, 1, 2, 12)]
    assert schedule.next_after(_utc(2026, 12, 31, 12)) == _utc(2027, 1, 1, 12)


def test_optional_year_stops_firing_after_that_year() -> None:
    schedule = parse("0 0 12 * * ? 2027")
    assert schedule.next_after(_utc(2027, 12, 31, 11)) == _utc(2027, 12, 31, 12)
    assert schedule.next_after(_utc(2027, 12, 31, 12)) is None


def test_optional_year_followed_by_a_zone() -> None:
    schedule = parse("0 0 12 ? * MON-FRI 2027 Asia/Shanghai")
    assert fires(schedule, 1) == [_utc(2027, 1, 1, 4)]  # Friday 2027-01-01 12:00 in Shanghai


# --- cron: Quartz days of the week (1 = Sunday .. 7 = Saturday) ---


def test_quartz_day_of_week_2_is_monday() -> None:
    times = fires(parse("0 0 12 ? * 2"), 3)
    assert times == [_utc(2026, 3, 16, 12), _utc(2026, 3, 23, 12), _utc(2026, 3, 30, 12)]
    assert all(d.strftime("%a") == "Mon" for d in local(times, UTC))


def test_quartz_day_of_week_1_is_sunday_and_7_is_saturday() -> None:
    assert fires(parse("0 0 12 ? * 1"), 1) == [_utc(2026, 3, 15, 12)]
    assert fires(parse("0 0 12 ? * 7"), 1) == [_utc(2026, 3, 14, 12)]


def test_plain_cron_day_of_week_keeps_unix_numbering() -> None:
    # In a 5-field cron 1 is Monday (0 and 7 are Sunday): no Quartz shift.
    times = fires(parse("0 12 * * 1"), 2)
    assert times == [_utc(2026, 3, 16, 12), _utc(2026, 3, 23, 12)]


def test_quartz_6l_is_the_last_friday_of_the_month() -> None:
    times = fires(parse("0 0 12 ? * 6L"), 3)
    assert times == [_utc(2026, 3, 27, 12), _utc(2026, 4, 24, 12), _utc(2026, 5, 29, 12)]
    for day in local(times, UTC):
        assert day.strftime("%a") == "Fri"
        assert (day + timedelta(days=7)).month != day.month


def test_quartz_2_hash_1_is_the_first_monday_of_the_month() -> None:
    times = fires(parse("0 0 12 ? * 2#1"), 3)
    # March's first Monday (the 2nd) is before NOW.
    assert times == [_utc(2026, 4, 6, 12), _utc(2026, 5, 4, 12), _utc(2026, 6, 1, 12)]
    for day in local(times, UTC):
        assert day.strftime("%a") == "Mon"
        assert day.day <= 7


def test_quartz_day_names_mon_fri_skip_the_weekend() -> None:
    times = fires(parse("0 0 12 ? * MON-FRI"), 5)
    assert times == [
        _utc(2026, 3, 10, 12),
        _utc(2026, 3, 11, 12),
        _utc(2026, 3, 12, 12),
        _utc(2026, 3, 13, 12),
        _utc(2026, 3, 16, 12),
    ]


def test_quartz_numeric_range_2_6_is_monday_to_friday() -> None:
    assert fires(parse("0 0 12 ? * 2-6"), 5) == fires(parse("0 0 12 ? * MON-FRI"), 5)


def test_l_day_of_month_is_the_last_day_of_each_month() -> None:
    times = fires(parse("0 0 12 L * ?"), 3)
    assert times == [_utc(2026, 3, 31, 12), _utc(2026, 4, 30, 12), _utc(2026, 5, 31, 12)]
    february = parse("0 0 12 L * ?", now_ms=_utc(2026, 2, 1))
    assert fires(february, 1, now_ms=_utc(2026, 2, 1)) == [_utc(2026, 2, 28, 12)]


def test_15w_is_the_weekday_nearest_the_15th() -> None:
    times = fires(parse("0 0 12 15W * ?"), 3)
    # 2026-03-15 is a Sunday: Monday the 16th; April 15th and May 15th are weekdays.
    assert times == [_utc(2026, 3, 16, 12), _utc(2026, 4, 15, 12), _utc(2026, 5, 15, 12)]
    august = _utc(2026, 8, 1)
    # 2026-08-15 is a Saturday: Friday the 14th.
    assert fires(parse("0 0 12 15W * ?", now_ms=august), 1, now_ms=august) == [
        _utc(2026, 8, 14, 12)
    ]


# --- cron: rejected expressions ---


def test_fires_closer_than_ten_seconds_are_rejected() -> None:
    error = rejected("*/5 * * * * ?", INVALID_FREQUENCY)
    assert "5 s apart" in error.message


def test_fires_ten_seconds_apart_are_accepted() -> None:
    schedule = parse("*/10 * * * * ?")
    times = fires(schedule, 3)
    assert times == [_utc(2026, 3, 10, 9, 7, 20), _utc(2026, 3, 10, 9, 7, 30), NOW + 27_000]


def test_two_close_seconds_in_one_minute_are_rejected() -> None:
    rejected("0,5 0 0 * * ?", INVALID_FREQUENCY)


@pytest.mark.parametrize(
    "text",
    [
        "0 0 12 *",  # 4 fields
        "* * * *",
        "0 0 12 * * ? 2027 * *",  # 9 fields
        "0 0 12 * * ? 2027 Asia/Tokyo extra",
    ],
)
def test_wrong_number_of_fields_is_a_bad_cron_expression(text: str) -> None:
    rejected(text, BAD_CRON)


@pytest.mark.parametrize("text", ["", "   "])
def test_blank_frequency_is_a_bad_cron_expression(text: str) -> None:
    # Reachable: validate_invocation only checks that a periodic frequency is non-empty.
    rejected(text, BAD_CRON)


@pytest.mark.parametrize(
    "text",
    [
        "60 * * * * ?",  # second
        "0 60 * * * ?",  # minute
        "0 0 25 * * ?",  # hour
        "0 0 12 32 * ?",  # day of month
        "0 0 12 ? 13 *",  # month
        "0 0 12 ? * 8",  # Quartz day of week is 1-7
        "0 0 12 ? * 0",
        "0 12 * * 8",  # plain day of week
        "0 24 * * *",  # plain hour
        "0 0 12 * * ? 1969",  # year
        "0 0 12 * * ? soon",
    ],
)
def test_value_out_of_range_is_a_bad_cron_expression(text: str) -> None:
    rejected(text, BAD_CRON)


def test_a_past_year_is_expired() -> None:
    rejected("0 0 12 * * ? 2025", CRON_EXPIRED)


def test_a_year_whose_last_fire_has_passed_is_expired() -> None:
    rejected("0 0 9 1 3 ? 2026", CRON_EXPIRED)  # 2026-03-01 09:00, before NOW


@pytest.mark.parametrize(
    "text", ["0 0 12 * * ? Mars/Phobos", "0 0 12 * * ? GMT+15:00", "0 12 * * * Asia/Atlantis"]
)
def test_unknown_trailing_zone_is_an_invalid_offset(text: str) -> None:
    rejected(text, INVALID_TIMEZONE)


# --- rate() ---


@pytest.mark.parametrize(
    ("text", "period_ms"),
    [
        ("rate(10s)", 10_000),
        ("rate(30s)", 30_000),
        ("rate(5m)", 300_000),
        ("rate(2h)", 7_200_000),
        ("rate(1d)", 86_400_000),
        ("rate(7d)", 604_800_000),
        ("RATE( 5M )", 300_000),
    ],
)
def test_rate_fires_at_creation_then_every_period(text: str, period_ms: int) -> None:
    schedule = parse(text)
    assert schedule.kind == "rate"
    assert schedule.period_seconds == period_ms / 1000
    assert fires(schedule, 3) == [NOW, NOW + period_ms, NOW + 2 * period_ms]


def test_rate_first_fire_is_the_creation_time_whenever_asked() -> None:
    schedule = parse("rate(5m)")
    assert schedule.first_fire(NOW + 12_345) == NOW


def test_rate_next_after_a_long_gap_is_the_first_slot_strictly_after() -> None:
    period = 5 * MINUTE_MS
    schedule = parse("rate(5m)")
    assert schedule.next_after(NOW - 1) == NOW
    assert schedule.next_after(NOW) == NOW + period
    assert schedule.next_after(NOW + 1) == NOW + period
    # A day and a bit later (server down): the next anchor + k * period, not a late catch-up.
    gap = NOW + 288 * period + 17
    assert schedule.next_after(gap) == NOW + 289 * period
    assert schedule.next_after(NOW + 288 * period) == NOW + 289 * period
    assert schedule.next_after(NOW + 289 * period - 1) == NOW + 289 * period


def test_rate_below_ten_seconds_is_rejected() -> None:
    rejected("rate(9s)", INVALID_FREQUENCY)
    rejected("rate(0s)", INVALID_FREQUENCY)


@pytest.mark.parametrize("text", ["rate(8d)", "rate(169h)", "rate(10081m)", "rate(604801s)"])
def test_rate_above_seven_days_is_too_large(text: str) -> None:
    rejected(text, RATE_TOO_LARGE)


def test_rate_not_longer_than_the_timeout_is_rejected() -> None:
    rejected("rate(1m)", INVALID_FREQUENCY, timeout_seconds=60)
    rejected("rate(1m)", INVALID_FREQUENCY, timeout_seconds=120)
    assert parse("rate(61s)", timeout_seconds=60).rate_ms == 61_000
    assert parse("rate(1m)", timeout_seconds=59).rate_ms == MINUTE_MS


@pytest.mark.parametrize(
    "text", ["rate(5)", "rate(1.5h)", "rate(5w)", "rate()", "rate(-5m)", "rate 5m", "rate(5m"]
)
def test_malformed_rate_is_an_invalid_rate_expression(text: str) -> None:
    rejected(text, INVALID_RATE)


# --- at() ---


def test_at_without_a_zone_uses_the_default_zone() -> None:
    schedule = parse("at(2026-11-22 10:00:00)", default_tz=UTC8)
    assert schedule.kind == "at"
    assert fires(schedule, 2) == [_utc(2026, 11, 22, 2)]


def test_at_with_an_explicit_zone_ignores_the_default() -> None:
    assert parse("at(2026-11-22 10:00:00 Asia/Tokyo)", default_tz=UTC8).first_fire(NOW) == (
        _utc(2026, 11, 22, 1)
    )
    assert parse("at(2026-11-22 10:00:00 GMT+8:00)").first_fire(NOW) == _utc(2026, 11, 22, 2)
    assert parse("at(2026-11-22T10:00:00 UTC)", default_tz=UTC8).first_fire(NOW) == (
        _utc(2026, 11, 22, 10)
    )


def test_at_in_the_past_is_expired() -> None:
    rejected("at(2025-11-22 10:00:00)", AT_EXPIRED)
    rejected("at(2026-03-10 09:07:13)", AT_EXPIRED)  # exactly now
    assert parse("at(2026-03-10 09:07:14)").first_fire(NOW) == NOW + 1_000


def test_at_is_judged_in_its_zone() -> None:
    # 12:00 in UTC+08:00 is 04:00 UTC, before NOW; 12:00 UTC is after it.
    rejected("at(2026-03-10 12:00:00 GMT+8:00)", AT_EXPIRED)
    rejected("at(2026-03-10 12:00:00)", AT_EXPIRED, default_tz=UTC8)
    assert parse("at(2026-03-10 12:00:00)").first_fire(NOW) == _utc(2026, 3, 10, 12)


@pytest.mark.parametrize(
    "text",
    [
        "at(2026-11-22)",
        "at(2026/11/22 10:00:00)",
        "at(26-11-22 10:00:00)",
        "at(2026-11-22 10:00)",
        "at 2026-11-22 10:00:00",
        "at(2026-11-22 10:00:00",
        "at()",
    ],
)
def test_malformed_at_is_an_invalid_at_expression(text: str) -> None:
    rejected(text, INVALID_AT)


@pytest.mark.parametrize(
    "text",
    ["at(2026-02-29 10:00:00)", "at(2026-04-31 10:00:00)", "at(2026-11-22 24:00:00)",
     "at(2026-13-01 10:00:00)", "at(2026-11-22 10:60:00)"],
)  # fmt: skip
def test_impossible_date_or_time_is_an_invalid_at_expression(text: str) -> None:
    rejected(text, INVALID_AT)


def test_at_with_an_unknown_zone_is_an_invalid_offset() -> None:
    rejected("at(2026-11-22 10:00:00 Mars/Phobos)", INVALID_TIMEZONE)


def test_at_has_no_fire_after_its_time() -> None:
    at = _utc(2026, 11, 22, 10)
    schedule = parse("at(2026-11-22 10:00:00)")
    assert schedule.next_after(NOW) == at
    assert schedule.next_after(at - 1) == at
    assert schedule.next_after(at) is None
    assert schedule.next_after(at + 86_400_000) is None


@pytest.mark.parametrize(
    ("text", "one_shot"),
    [
        ("at(2026-11-22 10:00:00)", True),
        ("rate(5m)", False),
        ("0 */20 * * * ?", False),
        ("*/5 * * * *", False),
        ("0 0 12 * * ? 2027", False),
    ],
)
def test_only_at_is_one_shot(text: str, one_shot: bool) -> None:
    assert parse(text).one_shot is one_shot
