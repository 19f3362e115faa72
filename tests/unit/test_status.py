"""The seed's status tables, row by row."""

from __future__ import annotations

import pytest

from cloudassist.server.domain.status import (
    TERMINAL_STATES,
    ExecutionState,
    InvokeStatus,
    coarse_status,
    overall_status,
    states_with_status,
)

R, F, FA, S, PF = (
    InvokeStatus.RUNNING,
    InvokeStatus.FINISHED,
    InvokeStatus.FAILED,
    InvokeStatus.STOPPED,
    InvokeStatus.PARTIAL_FAILED,
)


@pytest.mark.parametrize(
    ("state", "status"),
    [
        # "Being executed" / Running
        (ExecutionState.PENDING, R),
        (ExecutionState.RUNNING, R),
        (ExecutionState.STOPPING, R),
        # "Execution finished" / Finished: finished does not mean succeeded
        (ExecutionState.SUCCESS, F),
        (ExecutionState.FAILED, F),
        # "Execution failed" / Failed
        (ExecutionState.TIMEOUT, FA),
        (ExecutionState.ABORTED, FA),
        (ExecutionState.INVALID, FA),
        (ExecutionState.ERROR, FA),
        # "Stopped"
        (ExecutionState.CANCELLED, S),
        (ExecutionState.TERMINATED, S),
    ],
)
def test_record_status_of_each_state(state: ExecutionState, status: InvokeStatus) -> None:
    assert coarse_status(state) is status


def test_every_state_has_a_coarse_status() -> None:
    assert {coarse_status(s) for s in ExecutionState} == {R, F, FA, S}


def test_terminal_states_are_the_not_running_ones() -> None:
    assert {s for s in ExecutionState if s.terminal} == TERMINAL_STATES
    assert all(coarse_status(s) is not R for s in TERMINAL_STATES)
    assert all(coarse_status(s) is R for s in set(ExecutionState) - TERMINAL_STATES)


# The seed's "overall invocation status" table, one test per row, with three instances.
def test_all_finished_is_finished() -> None:
    assert overall_status([F, F, F]) is F


def test_some_finished_others_stopped_is_finished() -> None:
    assert overall_status([F, S, S]) is F
    assert overall_status([F, F, S]) is F


def test_all_failed_is_failed() -> None:
    assert overall_status([FA, FA, FA]) is FA


def test_all_stopped_is_stopped() -> None:
    assert overall_status([S, S, S]) is S


def test_all_running_is_running() -> None:
    assert overall_status([R, R, R]) is R


def test_some_running_is_running() -> None:
    assert overall_status([R, F, FA]) is R
    assert overall_status([R, S, S]) is R


def test_some_failed_is_partially_failed() -> None:
    assert overall_status([FA, F, F]) is PF
    assert overall_status([FA, S, S]) is PF
    assert overall_status([FA, FA, S]) is PF


def test_single_instance_invocation_mirrors_its_instance() -> None:
    for status in (R, F, FA, S):
        assert overall_status([status]) is status


def test_an_invocation_has_instances() -> None:
    with pytest.raises(ValueError, match="at least one"):
        overall_status([])


def test_states_with_status_inverts_coarse_status() -> None:
    for status in (R, F, FA, S):
        assert all(coarse_status(s) is status for s in states_with_status(status))
    assert states_with_status(PF) == frozenset()
