"""Flag defaults from the environment, shared by the server and the agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudassist.agent.config import parse_config as agent_config
from cloudassist.common.flags import EnvDefaults, variable
from cloudassist.server.config import parse_config as server_config


def test_the_variable_of_a_flag_is_the_prefix_and_the_name_in_upper_case() -> None:
    assert variable("CLOUDASSIST_AGENT_", "max-backoff") == "CLOUDASSIST_AGENT_MAX_BACKOFF"


def test_a_set_variable_is_the_default_and_an_unset_one_gives_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = EnvDefaults("TEST_FLAGS_")
    monkeypatch.setenv("TEST_FLAGS_DRAIN_DELAY", "3")
    monkeypatch.delenv("TEST_FLAGS_LISTEN", raising=False)
    assert env.get("drain-delay", "0") == "3"
    assert env.get("listen", "127.0.0.1:0") == "127.0.0.1:0"


def test_a_path_variable_that_is_empty_or_unset_is_no_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = EnvDefaults("TEST_FLAGS_")
    monkeypatch.setenv("TEST_FLAGS_CA", "")
    monkeypatch.delenv("TEST_FLAGS_CERT", raising=False)
    monkeypatch.setenv("TEST_FLAGS_KEY", "tls/key.pem")
    assert env.path("ca") is None
    assert env.path("cert") is None
    assert env.path("key") == Path("tls/key.pem")


def test_server_and_agent_read_their_own_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDASSIST_DRAIN_DELAY", "2.5")
    monkeypatch.setenv("CLOUDASSIST_AGENT_MAX_BACKOFF", "7")
    assert server_config([]).drain_delay_seconds == 2.5
    assert agent_config([]).max_backoff_seconds == 7.0
    # The flag wins over the variable.
    assert server_config(["--drain-delay", "1"]).drain_delay_seconds == 1.0
