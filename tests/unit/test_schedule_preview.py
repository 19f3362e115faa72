"""PreviewSchedule's rules (server/domain/schedule_preview.py): the fire times a frequency
gives from a fixed instant, and the refusals InvokeCommand would give."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.limits import Limits
from cloudassist.server.domain.schedule import AT_EXPIRED, BAD_CRON, INVALID_FREQUENCY
from cloudassist.server.domain.schedule_preview import preview_schedule
from cloudassist.server.domain.timezones import parse_timezone

# Tuesday 2026-03-10 09:07:13 UTC.
NOW = int(datetime(2026, 3, 10, 9, 7, 13, tzinfo=UTC).timestamp() * 1000)
UTC8 = parse_timezone("UTC+08:00")


def preview(frequency: str, count: int = 0, timeout: int | None = None) -> list[str]:
    found = preview_schedule(
        "cn-hangzhou", frequency, timeout, count, limits=Limits(), default_timezone=UTC8,
        now_ms=NOW,
    )  # fmt: skip
    return [f.local_time for f in found.fire_times]


def test_seconds_cron_gives_five_times_in_the_default_zone() -> None:
    assert preview("*/10 * * * * ?") == [
        "2026-03-10 17:07:20 +08:00",
        "2026-03-10 17:07:30 +08:00",
        "2026-03-10 17:07:40 +08:00",
        "2026-03-10 17:07:50 +08:00",
        "2026-03-10 17:08:00 +08:00",
    ]


def test_a_trailing_zone_is_the_schedules_own() -> None:
    found = preview_schedule(
        "cn-hangzhou", "0 0 12 ? * MON-FRI Europe/Paris", None, 2, limits=Limits(),
        default_timezone=UTC8, now_ms=NOW,
    )  # fmt: skip
    assert found.time_zone == "Europe/Paris"
    assert [f.local_time for f in found.fire_times] == [
        "2026-03-10 12:00:00 +01:00",
        "2026-03-11 12:00:00 +01:00",
    ]
    assert found.fire_times[0].time_ms == int(
        datetime(2026, 3, 10, 11, 0, tzinfo=UTC).timestamp() * 1000
    )


def test_rate_fires_now_then_every_period_and_at_once() -> None:
    assert preview("rate(5m)", count=3) == [
        "2026-03-10 17:07:13 +08:00",
        "2026-03-10 17:12:13 +08:00",
        "2026-03-10 17:17:13 +08:00",
    ]
    assert preview("at(2026-11-22 10:00:00 Asia/Shanghai)") == ["2026-11-22 10:00:00 +08:00"]


@pytest.mark.parametrize(
    ("frequency", "timeout", "count", "field", "reason"),
    [
        ("*/5 * * * * ?", None, 0, "frequency", INVALID_FREQUENCY),
        ("every day", None, 0, "frequency", BAD_CRON),
        ("at(2020-01-01 00:00:00)", None, 0, "frequency", AT_EXPIRED),
        ("rate(30s)", 60, 0, "frequency", INVALID_FREQUENCY),  # not longer than the timeout
        ("  ", None, 0, "frequency", reasons.MISSING_FREQUENCY),
        ("rate(5m)", 5, 0, "timeout_seconds", reasons.INVALID_TIMEOUT),
        ("rate(5m)", None, 51, "count", reasons.INVALID_PREVIEW_COUNT),
    ],
)
def test_refusals_name_the_field_and_rule(
    frequency: str, timeout: int | None, count: int, field: str, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        preview(frequency, count, timeout)
    assert (refused.value.field, refused.value.reason) == (field, reason)


def test_region_is_checked_first() -> None:
    with pytest.raises(InvalidArgument) as refused:
        preview_schedule(
            "", "rate(5m)", None, 0, limits=Limits(), default_timezone=UTC8, now_ms=NOW
        )
    assert refused.value.field == "region_id"
