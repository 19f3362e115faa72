"""Time zones (server/domain/timezones.py) and time-ordered ids (server/domain/ids.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cloudassist.server.domain import ids
from cloudassist.server.domain.timezones import day_start_ms, parse_timezone

WINTER = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("UTC+08:00", timedelta(hours=8)),
        ("GMT+8:00", timedelta(hours=8)),
        ("GMT-3", timedelta(hours=-3)),
        ("UTC-03:30", -timedelta(hours=3, minutes=30)),
        ("UTC+0545", timedelta(hours=5, minutes=45)),
        ("utc+14:00", timedelta(hours=14)),
        ("UTC", timedelta(0)),
        ("GMT", timedelta(0)),
    ],
)
def test_fixed_offsets(text: str, offset: timedelta) -> None:
    assert parse_timezone(text).utcoffset(WINTER) == offset


def test_iana_name() -> None:
    tz = parse_timezone("Asia/Shanghai")
    assert isinstance(tz, ZoneInfo)
    assert tz.key == "Asia/Shanghai"
    assert tz.utcoffset(WINTER.replace(tzinfo=None)) == timedelta(hours=8)


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_timezone("  UTC+08:00 ").utcoffset(WINTER) == timedelta(hours=8)


@pytest.mark.parametrize(
    "text", ["Mars/Base", "UTC+15:00", "UTC+08:60", "UTC+8:5", "", "+08:00", "../etc/passwd"]
)
def test_unknown_or_out_of_range_zones_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timezone(text)


def test_zone_directory_name_raises_value_error() -> None:
    # "Asia" is a directory of the zone database, not a zone: the docstring promises ValueError
    # for anything that is not a zone (config.py turns only ValueError into a usage error).
    with pytest.raises(ValueError):
        parse_timezone("Asia")


def test_day_start_in_utc_plus_8_on_the_same_utc_day() -> None:
    # 2024-01-01T15:00Z is 23:00 on Jan 1 in UTC+8; that day began at 2023-12-31T16:00Z.
    now = _ms(datetime(2024, 1, 1, 15, 0, tzinfo=UTC))
    expected = _ms(datetime(2023, 12, 31, 16, 0, tzinfo=UTC))
    assert day_start_ms(now, parse_timezone("UTC+08:00")) == expected
    assert expected == 1_704_038_400_000


def test_day_start_in_utc_plus_8_after_local_midnight() -> None:
    # 2024-01-01T20:00:00.123Z is 04:00 on Jan 2 in UTC+8; that day began at 2024-01-01T16:00Z.
    now = _ms(datetime(2024, 1, 1, 20, 0, tzinfo=UTC)) + 123
    expected = _ms(datetime(2024, 1, 1, 16, 0, tzinfo=UTC))
    assert day_start_ms(now, parse_timezone("UTC+08:00")) == expected
    assert expected == 1_704_124_800_000


def test_day_start_at_local_midnight_is_itself() -> None:
    midnight = _ms(datetime(2024, 1, 1, 16, 0, tzinfo=UTC))
    assert day_start_ms(midnight, parse_timezone("UTC+08:00")) == midnight
    assert day_start_ms(midnight - 1, parse_timezone("UTC+08:00")) == midnight - 86_400_000


def test_day_start_in_utc() -> None:
    now = _ms(datetime(2024, 1, 1, 20, 0, tzinfo=UTC))
    assert day_start_ms(now, UTC) == _ms(datetime(2024, 1, 1, tzinfo=UTC))


# --- ids ---

ALPHABET = set("0123456789abcdefghjkmnpqrstvwxyz")


@pytest.mark.parametrize(("make", "prefix"), [(ids.command_id, "c"), (ids.invoke_id, "t")])
def test_ids_have_their_prefix_and_length(make: Callable[[], str], prefix: str) -> None:
    value = make()
    assert value.startswith(prefix + "-")
    assert len(value) == len(prefix) + 1 + 20
    assert set(value[len(prefix) + 1 :]) <= ALPHABET


def test_record_id_prefix_and_length() -> None:
    value = ids.record_id()
    assert value.startswith("r-")
    assert len(value) == 22
    assert set(value[2:]) <= ALPHABET


def test_new_id_layout() -> None:
    value = ids.new_id("x", now_ms=0)
    assert value.startswith("x-0000000000")
    assert len(value) == 22


def test_new_id_encodes_the_time_in_its_first_ten_characters() -> None:
    assert ids.new_id("x", now_ms=1)[2:12] == "0000000001"
    assert ids.new_id("x", now_ms=32)[2:12] == "0000000010"
    assert ids.new_id("x", now_ms=31)[2:12] == "000000000z"


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        (0, 1),
        (1, 2),
        (31, 32),
        (1_700_000_000_000, 1_700_000_000_001),
        (1_700_000_000_999, 1_700_000_001_000),
        (1_704_038_400_000, 4_102_444_800_000),
    ],
)
def test_later_ids_sort_after_earlier_ones(earlier: int, later: int) -> None:
    for _ in range(20):
        assert ids.new_id("t", now_ms=earlier) < ids.new_id("t", now_ms=later)


def test_ids_sort_in_creation_order() -> None:
    made = [ids.new_id("r", now_ms=1_700_000_000_000 + step * 37) for step in range(200)]
    assert sorted(made) == made


def test_ids_made_in_the_same_millisecond_differ() -> None:
    made = {ids.new_id("r", now_ms=1_700_000_000_000) for _ in range(100)}
    assert len(made) == 100
