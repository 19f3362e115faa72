"""The record lifecycle (server/domain/lifecycle.py): every event in every state, no
database."""

from __future__ import annotations

import itertools

import pytest

from cloudassist.server.domain import lifecycle, reasons
from cloudassist.server.domain.lifecycle import (
    ACCEPTED,
    STOP_ASKED,
    Change,
    Deadline,
    DeadlinePassed,
    Ended,
    ErrorBudgetSpent,
    Event,
    HelloHolding,
    HelloWithout,
    Order,
)
from cloudassist.server.domain.status import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    ExecutionState,
    InvokeStatus,
    coarse_status,
)
from cloudassist.server.domain.tasks import EndKind, TaskEnd

S = ExecutionState
NOW = 1_700_000_000_000


def end(kind: EndKind, exit_code: int | None = 0, **fields: object) -> Ended:
    return Ended(TaskEnd("r-1", "i-1", kind, exit_code, 0, NOW, **fields))  # type: ignore[arg-type]


ONLINE = DeadlinePassed(agent_online=True, timeout_seconds=60)
OFFLINE = DeadlinePassed(agent_online=False, timeout_seconds=60)
FINISHED_0 = end(EndKind.FINISHED, 0)
FINISHED_3 = end(EndKind.FINISHED, 3)
STOPPED_RUNNING = end(EndKind.STOPPED, None, started=True)
STOPPED_UNSTARTED = end(EndKind.STOPPED, None, started=False)
TIMED_OUT = end(EndKind.TIMED_OUT, None)
MISSING_DIR = end(EndKind.ERROR, None, error_code=reasons.DIRECTORY_NOT_EXISTS, error_info="x")
CRASHED = end(EndKind.ERROR, None, error_code="", error_info="boom")
BUDGET = ErrorBudgetSpent(errors=2, max_errors=1)

# (state, event) -> the change; every pair not listed changes nothing (None).
TRANSITIONS: dict[tuple[ExecutionState, Event], Change] = {
    # The agent takes a task.
    (S.PENDING, ACCEPTED): Change(S.RUNNING, deadline=Deadline.EXECUTION),
    **{
        (s, ACCEPTED): Change(s, order=Order.STOP_TIMEOUT if s is S.TIMEOUT else Order.STOP)
        for s in TERMINAL_STATES
    },
    # The agent's last report: what it saw happen, in any active state.
    **{
        (s, e): c
        for s in ACTIVE_STATES
        for e, c in [
            (FINISHED_0, Change(S.SUCCESS, deadline=Deadline.CLEAR, agent_done=True)),
            (
                FINISHED_3,
                Change(
                    S.FAILED,
                    reasons.EXIT_CODE_NONZERO,
                    "the script exited with code 3",
                    deadline=Deadline.CLEAR,
                    agent_done=True,
                ),
            ),
            (STOPPED_RUNNING, Change(S.TERMINATED, deadline=Deadline.CLEAR, agent_done=True)),
            (STOPPED_UNSTARTED, Change(S.CANCELLED, deadline=Deadline.CLEAR, agent_done=True)),
            (
                TIMED_OUT,
                Change(
                    S.TIMEOUT,
                    reasons.EXECUTION_TIMEOUT,
                    "the agent killed the script when its timeout passed",
                    deadline=Deadline.CLEAR,
                    agent_done=True,
                ),
            ),
            (
                MISSING_DIR,
                Change(
                    S.INVALID,
                    reasons.DIRECTORY_NOT_EXISTS,
                    "x",
                    deadline=Deadline.CLEAR,
                    agent_done=True,
                ),
            ),
            (
                CRASHED,
                Change(
                    S.ERROR,
                    reasons.EXECUTION_EXCEPTION,
                    "boom",
                    deadline=Deadline.CLEAR,
                    agent_done=True,
                ),
            ),
        ]
    },
    # A user's stop.
    (S.PENDING, STOP_ASKED): Change(
        S.CANCELLED, order=Order.STOP, deadline=Deadline.CLEAR, agent_done=True
    ),
    (S.RUNNING, STOP_ASKED): Change(S.STOPPING, order=Order.STOP, deadline=Deadline.STOP_CONFIRM),
    (S.STOPPING, STOP_ASKED): Change(S.STOPPING, order=Order.STOP),
    # Deadlines: delivery, execution, stop confirmation.
    (S.PENDING, ONLINE): Change(
        S.ABORTED,
        reasons.DELIVERY_TIMEOUT,
        "the agent did not take the task in time",
        Order.STOP,
        Deadline.CLEAR,
        agent_done=True,
    ),
    (S.PENDING, OFFLINE): Change(
        S.ABORTED,
        reasons.CLIENT_NOT_ONLINE,
        "the agent was not connected before the delivery timeout",
        Order.STOP,
        Deadline.CLEAR,
        agent_done=True,
    ),
    **{
        (S.RUNNING, e): Change(
            S.TIMEOUT,
            reasons.EXECUTION_TIMEOUT,
            "the script ran longer than its timeout of 60 s",
            Order.STOP_TIMEOUT,
            Deadline.CLEAR,
        )
        for e in (ONLINE, OFFLINE)
    },
    **{
        (S.STOPPING, e): Change(
            S.TERMINATED,
            reasons.TERMINATION_EXCEPTION,
            "the agent did not confirm the stop in time",
            Order.STOP,
            Deadline.CLEAR,
        )
        for e in (ONLINE, OFFLINE)
    },
    **{
        (s, e): Change(s, deadline=Deadline.CLEAR)
        for s in TERMINAL_STATES
        for e in (ONLINE, OFFLINE)
    },
    # The agent said hello without the task: it restarted and lost it.
    (S.RUNNING, HelloWithout()): Change(
        S.ERROR,
        reasons.CLIENT_RESTARTED,
        "the agent restarted while the script was running",
        deadline=Deadline.CLEAR,
        agent_done=True,
    ),
    (S.STOPPING, HelloWithout()): Change(S.TERMINATED, deadline=Deadline.CLEAR, agent_done=True),
    # The agent said hello holding the task.
    (S.PENDING, HelloHolding(finished=False)): Change(S.RUNNING, deadline=Deadline.EXECUTION),
    (S.PENDING, HelloHolding(finished=True)): Change(S.RUNNING, deadline=Deadline.EXECUTION),
    (S.STOPPING, HelloHolding(finished=False)): Change(S.STOPPING, order=Order.STOP),
    **{
        (s, HelloHolding(finished=False)): Change(
            s, order=Order.STOP_TIMEOUT if s is S.TIMEOUT else Order.STOP
        )
        for s in TERMINAL_STATES
    },
    # Rate control: a held record once the error budget is spent.
    (S.PENDING, BUDGET): Change(
        S.CANCELLED,
        reasons.MAX_ERRORS_EXCEEDED,
        "2 records ended in error; max_errors is 1",
        deadline=Deadline.CLEAR,
        agent_done=True,
    ),
}

EVENTS: list[Event] = [
    ACCEPTED,
    FINISHED_0,
    FINISHED_3,
    STOPPED_RUNNING,
    STOPPED_UNSTARTED,
    TIMED_OUT,
    MISSING_DIR,
    CRASHED,
    STOP_ASKED,
    ONLINE,
    OFFLINE,
    HelloWithout(),
    HelloHolding(finished=False),
    HelloHolding(finished=True),
    BUDGET,
]


@pytest.mark.parametrize(
    ("state", "event"),
    list(itertools.product(ExecutionState, EVENTS)),
    ids=lambda v: v.value if isinstance(v, ExecutionState) else repr(v)[:40],
)
def test_every_event_in_every_state(state: ExecutionState, event: Event) -> None:
    assert lifecycle.on(state, event) == TRANSITIONS.get((state, event))


def test_the_table_lists_only_events_that_are_tried() -> None:
    assert {event for _, event in TRANSITIONS} <= set(EVENTS)


@pytest.mark.parametrize("state", sorted(TERMINAL_STATES))
def test_a_terminal_state_is_written_once(state: ExecutionState) -> None:
    """No event moves a record out of a terminal state (a late result never overwrites a
    timeout or a stop)."""
    for event in EVENTS:
        change = lifecycle.on(state, event)
        assert change is None or change.state is state, event


def test_a_change_that_ends_a_record_clears_its_deadline() -> None:
    for (state, event), change in TRANSITIONS.items():
        if change.ends and change.state is not state:
            assert change.deadline is Deadline.CLEAR, (state, event)


def test_ends_and_stopped_follow_the_state() -> None:
    assert Change(S.CANCELLED).stopped
    assert Change(S.TERMINATED).stopped
    assert not Change(S.ABORTED).stopped
    assert Change(S.ABORTED).ends
    assert not Change(S.STOPPING).ends


# The seed's table of record statuses, reached through the lifecycle: each row is a path from
# PENDING to the state, and the coarse status the seed gives it.
SEED_ROWS = [
    ([], S.PENDING, InvokeStatus.RUNNING),
    ([ACCEPTED], S.RUNNING, InvokeStatus.RUNNING),
    ([ACCEPTED, STOP_ASKED], S.STOPPING, InvokeStatus.RUNNING),
    ([ACCEPTED, FINISHED_0], S.SUCCESS, InvokeStatus.FINISHED),
    ([ACCEPTED, FINISHED_3], S.FAILED, InvokeStatus.FINISHED),
    ([ACCEPTED, ONLINE], S.TIMEOUT, InvokeStatus.FAILED),
    ([OFFLINE], S.ABORTED, InvokeStatus.FAILED),
    ([MISSING_DIR], S.INVALID, InvokeStatus.FAILED),
    ([ACCEPTED, HelloWithout()], S.ERROR, InvokeStatus.FAILED),
    ([STOP_ASKED], S.CANCELLED, InvokeStatus.STOPPED),
    ([ACCEPTED, STOP_ASKED, STOPPED_RUNNING], S.TERMINATED, InvokeStatus.STOPPED),
]


@pytest.mark.parametrize(
    ("path", "state", "status"), SEED_ROWS, ids=[r[1].value for r in SEED_ROWS]
)
def test_each_row_of_the_seed_table(
    path: list[Event], state: ExecutionState, status: InvokeStatus
) -> None:
    current = S.PENDING
    for event in path:
        change = lifecycle.on(current, event)
        assert change is not None, (current, event)
        current = change.state
    assert current is state
    assert coarse_status(current) is status


def test_the_seed_table_covers_every_state() -> None:
    assert {row[1] for row in SEED_ROWS} == set(ExecutionState)
