"""A lifecycle change (server/domain/lifecycle.py) as the record columns to write and the
orders its agent is sent: the store applies the state machine's answers, it does not decide."""

from __future__ import annotations

from cloudassist.server.domain.lifecycle import Change, Deadline, Order
from cloudassist.server.domain.reports import CancelOrder


def change_values(
    change: Change, now_ms: int, deadline_ms: int | None = None, start_ms: int | None = None
) -> dict[str, object]:
    """The record columns `change` sets at `now_ms`; `deadline_ms` is the new deadline when
    the change sets one, `start_ms` the start time when the record starts (default now)."""
    values: dict[str, object] = {"state": change.state.value}
    if change.error_code or change.error_info:
        values["error_code"] = change.error_code
        values["error_info"] = change.error_info
    if change.ends:
        values["finish_ms"] = now_ms
    if change.stopped:
        values["stop_ms"] = now_ms
    if change.agent_done:
        values["agent_done"] = True
    if change.deadline is Deadline.CLEAR:
        values["deadline_ms"] = None
    elif change.deadline is not Deadline.KEEP:
        if deadline_ms is None:
            raise ValueError(f"the change sets a {change.deadline.value} deadline: give it")
        values["deadline_ms"] = deadline_ms
        if change.deadline is Deadline.EXECUTION:
            values["start_ms"] = start_ms if start_ms is not None else now_ms
    return values


def orders_of(change: Change, instance_id: str, record_id: str) -> list[CancelOrder]:
    """The cancel the record's agent is sent with the change, if any."""
    if change.order is Order.NONE:
        return []
    return [CancelOrder(instance_id, record_id, timeout=change.order is Order.STOP_TIMEOUT)]
