"""The environment variables an invocation passes to its scripts."""

from __future__ import annotations

import pytest

from cloudassist.server.domain import reasons
from cloudassist.server.domain.environment import check_env
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.limits import Limits

LIMITS = Limits(env_vars=3, env_bytes=20)


def test_valid_variables_pass_unchanged() -> None:
    env = {"A": "1", "_b2": "", "PATH": "/opt/bin"}
    assert check_env(env, LIMITS) == env


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A B", "é", "A=B"])
def test_a_name_that_is_not_a_variable_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_env({name: "x"}, LIMITS)
    assert caught.value.reason == reasons.ENV_INVALID_NAME
    assert caught.value.field == "env"


@pytest.mark.parametrize("name", ["CLOUDASSIST_TASK_ID", "cloudassist_x", "CLOUDASSIST_"])
def test_the_agents_own_names_are_reserved(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_env({name: "x"}, LIMITS)
    assert caught.value.reason == reasons.ENV_RESERVED_NAME


def test_too_many_variables() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_env({f"V{n}": "" for n in range(4)}, LIMITS)
    assert caught.value.reason == reasons.ENV_EXCEED_LIMIT
    assert caught.value.metadata["limit"] == "3"


def test_names_and_values_count_in_bytes_against_the_size_limit() -> None:
    assert check_env({"A": "x" * 19}, LIMITS)  # 20 bytes: at the limit
    with pytest.raises(InvalidArgument) as caught:
        check_env({"A": "é" * 10}, LIMITS)  # 1 + 20 bytes
    assert caught.value.reason == reasons.ENV_EXCEED_LIMIT
    assert caught.value.metadata["size"] == "21"
