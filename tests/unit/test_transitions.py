"""A lifecycle change as the record columns the store writes and the orders it sends."""

from __future__ import annotations

import pytest

from cloudassist.server.domain.lifecycle import Change, Deadline, Order
from cloudassist.server.domain.reports import CancelOrder
from cloudassist.server.domain.status import ExecutionState as S
from cloudassist.server.store.transitions import change_values, orders_of

NOW = 1_700_000_000_000


def test_an_abort_ends_the_record_for_good() -> None:
    change = Change(S.ABORTED, "DeliveryTimeout", "late", Order.STOP, Deadline.CLEAR, True)
    assert change_values(change, NOW) == {
        "state": "ABORTED",
        "error_code": "DeliveryTimeout",
        "error_info": "late",
        "finish_ms": NOW,
        "agent_done": True,
        "deadline_ms": None,
    }


def test_a_stop_sets_the_stop_and_finish_times() -> None:
    values = change_values(Change(S.CANCELLED, deadline=Deadline.CLEAR, agent_done=True), NOW)
    assert values["stop_ms"] == values["finish_ms"] == NOW
    assert "error_code" not in values, "a stop leaves the error fields alone"


def test_a_start_takes_its_deadline_and_start_time() -> None:
    change = Change(S.RUNNING, deadline=Deadline.EXECUTION)
    assert change_values(change, NOW, NOW + 60_000) == {
        "state": "RUNNING",
        "deadline_ms": NOW + 60_000,
        "start_ms": NOW,
    }
    assert change_values(change, NOW, NOW + 60_000, start_ms=NOW - 5)["start_ms"] == NOW - 5


def test_a_stopping_record_gets_the_confirmation_deadline_only() -> None:
    change = Change(S.STOPPING, order=Order.STOP, deadline=Deadline.STOP_CONFIRM)
    assert change_values(change, NOW, NOW + 5_000) == {
        "state": "STOPPING",
        "deadline_ms": NOW + 5_000,
    }


def test_a_new_deadline_must_be_given() -> None:
    with pytest.raises(ValueError, match="execution deadline"):
        change_values(Change(S.RUNNING, deadline=Deadline.EXECUTION), NOW)


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (Order.NONE, []),
        (Order.STOP, [CancelOrder("i-1", "r-1")]),
        (Order.STOP_TIMEOUT, [CancelOrder("i-1", "r-1", timeout=True)]),
    ],
)
def test_orders(order: Order, expected: list[CancelOrder]) -> None:
    assert orders_of(Change(S.TIMEOUT, order=order), "i-1", "r-1") == expected
