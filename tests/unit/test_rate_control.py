"""Rate control: max_concurrency and max_errors, as numbers or percentages of the targets."""

from __future__ import annotations

import pytest

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.rate_control import (
    error_budget_spent,
    parse_max_concurrency,
    parse_max_errors,
    released,
)


@pytest.mark.parametrize(
    ("text", "targets", "expected"),
    [("", 10, None), ("3", 10, 3), ("25%", 10, 2), ("5%", 10, 1), ("100%", 7, 7), ("50", 2, 50)],
)
def test_max_concurrency(text: str, targets: int, expected: int | None) -> None:
    assert parse_max_concurrency(text, targets) == expected


@pytest.mark.parametrize(
    ("text", "targets", "expected"),
    [("", 10, None), ("0", 10, 0), ("10%", 10, 1), ("5%", 10, 0), ("2", 3, 2)],
)
def test_max_errors(text: str, targets: int, expected: int | None) -> None:
    assert parse_max_errors(text, targets) == expected


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "ten", "101%", "%", "1e3"])
def test_bad_concurrency_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_max_concurrency(text, 10)
    assert caught.value.reason == reasons.INVALID_MAX_CONCURRENCY
    assert caught.value.field == "max_concurrency"


@pytest.mark.parametrize("text", ["-1", "x", "150%"])
def test_bad_error_budget_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_max_errors(text, 10)
    assert caught.value.reason == reasons.INVALID_MAX_ERRORS


def test_places_free_up_as_records_end() -> None:
    assert released(None, active=5, waiting=3) == 3
    assert released(2, active=0, waiting=5) == 2
    assert released(2, active=1, waiting=5) == 1
    assert released(2, active=2, waiting=5) == 0
    assert released(2, active=0, waiting=1) == 1


def test_the_budget_is_spent_when_errors_exceed_it() -> None:
    assert not error_budget_spent(None, 100)
    assert not error_budget_spent(1, 1)
    assert error_budget_spent(1, 2)
    assert error_budget_spent(0, 1)
