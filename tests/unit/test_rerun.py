"""RerunInvocation's rules (server/domain/rerun.py): which instances run again, and what."""

from __future__ import annotations

import pytest

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import FailedPrecondition, InvalidArgument
from cloudassist.server.domain.model import (
    CommandType,
    Invocation,
    InvocationSpec,
    InvokeInstance,
    RepeatMode,
)
from cloudassist.server.domain.rerun import FAILED_STATES, check_states, rerun_spec, rerun_targets
from cloudassist.server.domain.status import (
    ExecutionState,
    InvokeStatus,
    coarse_status,
    overall_status,
)

E = ExecutionState


def spec(instance_ids: tuple[str, ...]) -> InvocationSpec:
    return InvocationSpec(
        region_id="r-1",
        command_id="c-1",
        command_name="deploy",
        command_type=CommandType.RUN_SHELL_SCRIPT,
        content=b"deploy {{version}}",
        enable_parameter=True,
        parameters={"version": "2"},
        instance_ids=instance_ids,
        repeat_mode=RepeatMode.PERIOD,
        frequency="rate(1h)",
        timeout_seconds=120,
        working_dir="/srv",
        username="deploy",
        env={"STAGE": "prod"},
        launcher="bash {{ACS::ScriptFile}}",
        max_concurrency=2,
        max_errors=1,
    )


def member(instance_id: str, state: ExecutionState) -> InvokeInstance:
    return InvokeInstance(
        instance_id=instance_id,
        state=state,
        status=coarse_status(state),
        repeats=1,
        exit_code=None,
        error_code="",
        error_info="",
        created_ms=0,
        start_ms=None,
        finish_ms=None,
        stop_ms=None,
        updated_ms=0,
    )


def invocation(**states: ExecutionState) -> Invocation:
    members = tuple(member(i.replace("_", "-"), s) for i, s in sorted(states.items()))
    return Invocation(
        invoke_id="t-1",
        spec=spec(tuple(m.instance_id for m in members)),
        status=overall_status(m.status for m in members),
        created_ms=0,
        instances=members,
    )


def test_by_default_every_failed_state_runs_again_and_nothing_else() -> None:
    source = invocation(
        i_a=E.SUCCESS,
        i_b=E.FAILED,
        i_c=E.TIMEOUT,
        i_d=E.ABORTED,
        i_e=E.INVALID,
        i_f=E.ERROR,
        i_g=E.CANCELLED,
        i_h=E.TERMINATED,
    )
    assert source.status is InvokeStatus.PARTIAL_FAILED
    assert rerun_targets(source, []) == ("i-b", "i-c", "i-d", "i-e", "i-f")


def test_chosen_states_narrow_the_targets() -> None:
    source = invocation(i_a=E.FAILED, i_b=E.TIMEOUT, i_c=E.ERROR)
    assert rerun_targets(source, [E.TIMEOUT, E.ERROR]) == ("i-b", "i-c")


def test_a_non_zero_exit_under_a_finished_invocation_runs_again() -> None:
    # FAILED (exit code other than 0) is "Finished" in the seed's table, yet it failed.
    source = invocation(i_a=E.SUCCESS, i_b=E.FAILED)
    assert source.status is InvokeStatus.FINISHED
    assert rerun_targets(source, []) == ("i-b",)


def test_named_instances_narrow_the_failed_ones() -> None:
    source = invocation(i_a=E.FAILED, i_b=E.TIMEOUT)
    assert rerun_targets(source, [], ["i-b", "i-b"]) == ("i-b",)


def test_a_named_instance_that_did_not_fail_is_refused_by_name() -> None:
    source = invocation(i_a=E.FAILED, i_b=E.SUCCESS, i_c=E.TIMEOUT)
    with pytest.raises(FailedPrecondition) as caught:
        rerun_targets(source, [E.FAILED], ["i-a", "i-b", "i-c", "i-z"])
    error = caught.value
    assert error.reason == reasons.INSTANCE_NOT_FAILED
    assert error.field == "instance_ids"
    assert error.message.startswith("instance_ids: i-b, i-c, i-z did not end FAILED")
    assert "the instances that did: i-a" in error.message


@pytest.mark.parametrize("state", [E.SUCCESS, E.PENDING, E.RUNNING, E.CANCELLED, E.TERMINATED])
def test_a_state_that_is_not_a_failure_is_an_invalid_argument(state: ExecutionState) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_states([E.TIMEOUT, state])
    assert caught.value.field == "states"
    assert caught.value.reason == reasons.INVALID_RERUN_STATES
    assert caught.value.message.startswith(f"states: {state.value} is not a failed state")


def test_states_are_kept_once_in_their_usual_order() -> None:
    assert check_states([]) == FAILED_STATES
    assert check_states([E.ERROR, E.FAILED, E.ERROR]) == (E.FAILED, E.ERROR)


def test_a_running_invocation_is_refused_with_its_status() -> None:
    source = invocation(i_a=E.FAILED, i_b=E.RUNNING)
    with pytest.raises(FailedPrecondition) as caught:
        rerun_targets(source, [])
    assert caught.value.reason == reasons.INVOCATION_NOT_ENDED
    assert caught.value.message == (
        "invoke_id: invocation t-1 is Running; it can run again once it has ended"
    )


@pytest.mark.parametrize(
    ("states", "status"),
    [
        ({"i_a": E.SUCCESS, "i_b": E.SUCCESS}, "Finished"),
        ({"i_a": E.CANCELLED, "i_b": E.TERMINATED}, "Stopped"),
    ],
)
def test_an_invocation_with_no_failed_instance_is_refused_with_its_status(
    states: dict[str, ExecutionState], status: str
) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        rerun_targets(invocation(**states), [])
    assert caught.value.reason == reasons.NO_FAILED_INSTANCE
    assert caught.value.message.startswith(f"invoke_id: invocation t-1 is {status} and no ")


def test_no_instance_in_the_chosen_states_is_refused() -> None:
    source = invocation(i_a=E.FAILED, i_b=E.SUCCESS)
    assert source.status is InvokeStatus.FINISHED
    with pytest.raises(FailedPrecondition) as caught:
        rerun_targets(source, [E.TIMEOUT])
    assert caught.value.reason == reasons.NO_FAILED_INSTANCE
    assert "no instance of it ended TIMEOUT" in caught.value.message


def test_the_rerun_runs_once_with_the_source_content_and_options() -> None:
    source = spec(("i-a", "i-b", "i-c"))
    again = rerun_spec(source, ["i-b"])
    assert again.instance_ids == ("i-b",)
    assert again.repeat_mode is RepeatMode.ONCE
    assert again.frequency == ""
    kept = ("command_id", "command_name", "command_type", "content", "enable_parameter")
    kept += ("parameters", "timeout_seconds", "working_dir", "username", "env", "launcher")
    kept += ("max_concurrency", "max_errors", "region_id", "file")
    for name in kept:
        assert getattr(again, name) == getattr(source, name), name
