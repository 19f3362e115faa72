"""The execution context of scripts: the user they run as, its HOME, and a minimal environment."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import run, watch

# What a script's environment holds (besides what /bin/sh itself sets: PWD, SHLVL, _).
DOCUMENTED = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TZ"}
PER_TASK = {"CLOUDASSIST_TASK_ID", "CLOUDASSIST_INVOKE_ID"}
SHELL_OWN = {"PWD", "SHLVL", "_", "OLDPWD"}

SCRIPT = """\
id -u
id -g
echo "$HOME"
pwd
stat -c '%U %a' "$(dirname "$0")"
dirname "$0"
env | cut -d= -f1 | sort
"""


@pytest.fixture(scope="module")
def user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.fail("running scripts as another user needs the agents (and tests) to run as root")
    name = f"ca-test-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


async def test_a_script_runs_as_the_named_user_with_its_home(
    stub: command_pb2_grpc.CommandServiceStub, user: pwd.struct_passwd
) -> None:
    invoke_id = await run(stub, SCRIPT, ["i-a"], username=user.pw_name)
    seen = await watch(stub, invoke_id)
    assert seen.states["i-a"].state == pb.EXECUTION_STATE_SUCCESS, seen.states["i-a"]
    lines = bytes(seen.output["i-a"]).decode().splitlines()
    uid, gid, home, cwd, script_dir_mode, script_dir, *names = lines
    assert int(uid) == user.pw_uid
    assert int(gid) == user.pw_gid
    assert home == user.pw_dir
    assert cwd == user.pw_dir, "the default working directory is the user's home"
    assert script_dir_mode == f"{user.pw_name} 700", "the script is private to its user"
    removed = not await asyncio.to_thread(os.path.exists, script_dir)
    assert removed, "the script's temporary directory is removed after"
    assert set(names) - SHELL_OWN <= DOCUMENTED | PER_TASK
    assert set(names) >= PER_TASK


async def test_the_environment_is_minimal_for_the_agents_own_user(
    stub: command_pb2_grpc.CommandServiceStub,
) -> None:
    invoke_id = await run(stub, "env", ["i-b"])
    seen = await watch(stub, invoke_id)
    env = dict(
        line.split("=", 1)
        for line in bytes(seen.output["i-b"]).decode().splitlines()
        if "=" in line
    )
    assert set(env) - SHELL_OWN <= DOCUMENTED | PER_TASK
    assert env["CLOUDASSIST_INVOKE_ID"] == invoke_id
    # Nothing of the agent's own environment (which has the tests' whole environment) leaks.
    assert "PYTEST_CURRENT_TEST" not in env
    assert not any(name.startswith("CLOUDASSIST_AGENT") for name in env)


async def test_an_unknown_user_makes_the_record_invalid(
    stub: command_pb2_grpc.CommandServiceStub,
) -> None:
    invoke_id = await run(stub, "id", ["i-c"], username="no-such-user-here")
    seen = await watch(stub, invoke_id)
    change = seen.states["i-c"]
    assert change.state == pb.EXECUTION_STATE_INVALID
    assert change.invoke_record_status == pb.INVOKE_STATUS_FAILED
    assert change.error_code == "AccountNotExists"
