"""The record lifecycle as a pure state machine: a record's state and an event give the new
state, its error code and what the agent must be told.

Every transition the server decides is here (the agent's own outcomes come from `outcome_of`
in server/domain/tasks.py); the store loads a record's state, asks `on`, and writes what the
answer says, with `WHERE state = <the state it read>` so a transition happens once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cloudassist.server.domain import reasons
from cloudassist.server.domain.status import ExecutionState
from cloudassist.server.domain.tasks import TaskEnd, outcome_of

PENDING = ExecutionState.PENDING
RUNNING = ExecutionState.RUNNING
STOPPING = ExecutionState.STOPPING


class Order(Enum):
    """What the record's agent is told along with the change."""

    NONE = "none"
    STOP = "stop"  # kill the task (a user's stop, or the server has ended the record)
    STOP_TIMEOUT = "stop_timeout"  # kill it: its timeout passed


class Deadline(Enum):
    """What becomes of the record's stored deadline."""

    KEEP = "keep"
    CLEAR = "clear"
    EXECUTION = "execution"  # start + the invocation's timeout
    STOP_CONFIRM = "stop_confirm"  # the agent must confirm a stop by then


@dataclass(frozen=True)
class Change:
    """What an event does to a record."""

    state: ExecutionState
    error_code: str = ""
    error_info: str = ""
    order: Order = Order.NONE
    deadline: Deadline = Deadline.KEEP
    # The agent will not report on it any more (it never took it, or it lost it).
    agent_done: bool = False

    @property
    def ends(self) -> bool:
        """The record reaches a terminal state (its finish time is set)."""
        return self.state.terminal

    @property
    def stopped(self) -> bool:
        """A stop ended it (its stop time is set)."""
        return self.state in (ExecutionState.CANCELLED, ExecutionState.TERMINATED)


# Events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """The agent took the task (task_accepted, or a hello holding a task still PENDING)."""


@dataclass(frozen=True)
class Ended:
    """The agent's last report on the task."""

    end: TaskEnd


@dataclass(frozen=True)
class StopAsked:
    """A user stopped the invocation on the record's instance."""


@dataclass(frozen=True)
class DeadlinePassed:
    """The record's stored deadline passed (delivery, execution or stop confirmation: which
    one follows from its state)."""

    agent_online: bool
    timeout_seconds: int


@dataclass(frozen=True)
class HelloWithout:
    """The instance's agent said hello without this task: it lost it (it restarted)."""


@dataclass(frozen=True)
class HelloHolding:
    """The instance's agent said hello holding this task; `finished`: it has its result."""

    finished: bool


@dataclass(frozen=True)
class ErrorBudgetSpent:
    """A held record of a rate-controlled invocation whose error budget is spent."""

    errors: int
    max_errors: int


ACCEPTED = Accepted()
STOP_ASKED = StopAsked()

Event = (
    Accepted | Ended | StopAsked | DeadlinePassed | HelloWithout | HelloHolding | ErrorBudgetSpent
)


def on(state: ExecutionState, event: Event) -> Change | None:
    """The change `event` makes to a record in `state`; None when it changes nothing and the
    agent need not be told anything."""
    if isinstance(event, Accepted):
        return _accepted(state)
    if isinstance(event, Ended):
        return _ended(state, event.end)
    if isinstance(event, StopAsked):
        return _stop_asked(state)
    if isinstance(event, DeadlinePassed):
        return _deadline_passed(state, event)
    if isinstance(event, HelloWithout):
        return _lost(state)
    if isinstance(event, HelloHolding):
        return _held(state, event.finished)
    return _budget_spent(state, event)


def _accepted(state: ExecutionState) -> Change | None:
    if state is PENDING:
        return Change(RUNNING, deadline=Deadline.EXECUTION)
    if state.terminal:
        # Stopped or expired before the agent took it: the agent must drop it.
        return _drop(state)
    return None


def _drop(state: ExecutionState) -> Change:
    """A record that has ended while its agent still holds it: the agent is told to kill it
    (as for a timeout when the server timed it out); the state stays."""
    timeout = state is ExecutionState.TIMEOUT
    return Change(state, order=Order.STOP_TIMEOUT if timeout else Order.STOP)


def _ended(state: ExecutionState, end: TaskEnd) -> Change | None:
    if state.terminal:
        return None  # the server decided first (timeout, stop): that state stays
    # Whatever the state (a script may exit on its own while being stopped), what the agent
    # saw happen is what happened.
    outcome = outcome_of(end)
    return Change(
        outcome.state,
        outcome.error_code,
        outcome.error_info[:1024],
        deadline=Deadline.CLEAR,
        agent_done=True,
    )


def _stop_asked(state: ExecutionState) -> Change | None:
    if state is PENDING:
        return Change(
            ExecutionState.CANCELLED, order=Order.STOP, deadline=Deadline.CLEAR, agent_done=True
        )
    if state is RUNNING:
        return Change(STOPPING, order=Order.STOP, deadline=Deadline.STOP_CONFIRM)
    if state is STOPPING:
        return Change(STOPPING, order=Order.STOP)
    return None


def _deadline_passed(state: ExecutionState, event: DeadlinePassed) -> Change:
    if state is PENDING:
        if event.agent_online:
            code, info = reasons.DELIVERY_TIMEOUT, "the agent did not take the task in time"
        else:
            code = reasons.CLIENT_NOT_ONLINE
            info = "the agent was not connected before the delivery timeout"
        return Change(ExecutionState.ABORTED, code, info, Order.STOP, Deadline.CLEAR, True)
    if state is RUNNING:
        return Change(
            ExecutionState.TIMEOUT,
            reasons.EXECUTION_TIMEOUT,
            f"the script ran longer than its timeout of {event.timeout_seconds} s",
            Order.STOP_TIMEOUT,
            Deadline.CLEAR,
        )
    if state is STOPPING:
        return Change(
            ExecutionState.TERMINATED,
            reasons.TERMINATION_EXCEPTION,
            "the agent did not confirm the stop in time",
            Order.STOP,
            Deadline.CLEAR,
        )
    # Terminal with a stray deadline: only the deadline goes.
    return Change(state, deadline=Deadline.CLEAR)


def _lost(state: ExecutionState) -> Change | None:
    if state is RUNNING:
        return Change(
            ExecutionState.ERROR,
            reasons.CLIENT_RESTARTED,
            "the agent restarted while the script was running",
            deadline=Deadline.CLEAR,
            agent_done=True,
        )
    if state is STOPPING:
        # It was being killed anyway: the restart did it.
        return Change(ExecutionState.TERMINATED, deadline=Deadline.CLEAR, agent_done=True)
    return None  # PENDING ones are sent again; ended ones need nothing


def _held(state: ExecutionState, finished: bool) -> Change | None:
    if state is PENDING:
        # The agent took it but its acceptance was lost.
        return Change(RUNNING, deadline=Deadline.EXECUTION)
    if finished:
        return None  # its result is on its way
    if state.terminal:
        return _drop(state)
    if state is STOPPING:
        return Change(STOPPING, order=Order.STOP)
    return None


def _budget_spent(state: ExecutionState, event: ErrorBudgetSpent) -> Change | None:
    if state is not PENDING:
        return None
    return Change(
        ExecutionState.CANCELLED,
        reasons.MAX_ERRORS_EXCEEDED,
        f"{event.errors} records ended in error; max_errors is {event.max_errors}",
        deadline=Deadline.CLEAR,
        agent_done=True,
    )
