"""Processes started the way users start them: with relative paths, from their own directory.

Each path a process takes from its flags is resolved once, at start-up, against the directory
it was started in; scripts start elsewhere (in their user's home), so a path left relative
would point nowhere there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc, instance_pb2, instance_pb2_grpc
from tests import support
from tests.integration.helpers import REGION, results, run, watch
from tests.support import (
    AgentProcess,
    Process,
    ServerProcess,
    children_of,
    client_channel,
    free_port,
    process_gone,
    wait_until,
)

REPOSITORY = Path(__file__).resolve().parents[2]
# The virtualenv running the tests (the project is installed in it, editable).
VENV = Path(sys.executable).parent.parent


async def test_a_server_and_an_agent_given_relative_paths_run_a_script_and_keep_their_files_there(
    tmp_path: Path,
) -> None:
    here = tmp_path / "here"
    # Later flags win: the relative ones replace the absolute paths ServerProcess gives.
    relative_db = [] if support.database_factory else ["--db", "sqlite:///db/cloudassist.db"]
    server = ServerProcess(
        here / "var",
        "--data-dir", "var", "--ready-file", "var/ready.json", "--output-dir", "out",
        *relative_db,
    )  # fmt: skip
    server.cwd = here
    agent = AgentProcess(server, "i-rel", tmp_path)
    agent.extra = ["--state-dir", "state"]
    agent.cwd = here
    try:
        server.start()
        agent.start()
        async with client_channel(server) as channel:
            stub = command_pb2_grpc.CommandServiceStub(channel)
            invoke_id = await run(stub, 'echo "hello from $0"; exit 3', ["i-rel"])
            seen = await watch(stub, invoke_id)
            result = (await results(stub, invoke_id))["i-rel"]
        script = (here / "state" / "scripts").resolve()
        assert bytes(seen.output["i-rel"]).startswith(f"hello from {script}/".encode())
        assert (result.invoke_record_status, result.exit_code) == (pb.INVOKE_STATUS_FINISHED, 3)
        assert (here / "var" / "admin.key").is_file()
        assert (here / "state" / "credentials.json").is_file()
        if not support.database_factory:
            assert (here / "db" / "cloudassist.db").is_file()
        summaries = here / "out" / invoke_id / "i-rel"
        wait_until(lambda: any(summaries.glob("*.json")), 30, "the output copied to out/")
        assert next(summaries.glob("*.out")).read_bytes() == bytes(seen.output["i-rel"])
    finally:
        agent.stop()
        server.stop()


@pytest.fixture
def local_run(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """`deploy/run-local.sh` from a copy of the repository's layout (its own var/), on free
    ports; stopped with SIGINT, as Ctrl-C does, and its server and agent must be gone after."""
    root = tmp_path / "checkout"
    (root / "deploy").mkdir(parents=True)
    shutil.copy2(REPOSITORY / "deploy" / "run-local.sh", root / "deploy" / "run-local.sh")
    (root / ".venv").symlink_to(VENV)
    listen = f"127.0.0.1:{free_port()}"
    env = {
        "CLOUDASSIST_LISTEN": listen,
        "CLOUDASSIST_CONSOLE_LISTEN": f"127.0.0.1:{free_port()}",
    }
    script = Process(
        ["bash", str(root / "deploy" / "run-local.sh")], tmp_path / "run-local.log", env=env
    )
    script.start()
    children: list[int] = []
    try:
        ready = root / "var" / "ready.json"

        def serving() -> bool:
            if not script.running():
                raise RuntimeError(f"run-local.sh exited early:\n{script.log()}")
            return ready.exists()

        wait_until(serving, 60, "the server of run-local.sh")
        admin_key = (root / "var" / "admin.key").read_text().strip()
        _wait_online(listen, admin_key, "i-local")
        children = children_of(script.pid)
        assert len(children) == 2, f"run-local.sh runs a server and an agent: {children}"
        yield root, listen
    finally:
        code = script.stop(signal.SIGINT, timeout=30)
        leftover = [pid for pid in children if not process_gone(pid)]
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
        assert not leftover, f"run-local.sh left {leftover} running:\n{script.log()}"
        assert code != -signal.SIGKILL, f"run-local.sh did not stop on SIGINT:\n{script.log()}"


def _wait_online(listen: str, admin_key: str, instance_id: str) -> None:
    with grpc.insecure_channel(listen) as channel:
        stub = instance_pb2_grpc.InstanceServiceStub(channel)

        def online() -> bool:
            response = stub.DescribeInstances(
                instance_pb2.DescribeInstancesRequest(region_id=REGION, instance_ids=[instance_id]),
                metadata=(("authorization", f"Bearer {admin_key}"),),
            )
            return bool(response.instances) and response.instances[0].online

        wait_until(online, 60, f"{instance_id} online")


def test_run_local_runs_a_script_through_the_cli(local_run: tuple[Path, str]) -> None:
    root, listen = local_run
    done = subprocess.run(
        [".venv/bin/cloudassist", "--server", listen, "run", "-i", "i-local",
         "echo hello; exit 3"],
        cwd=root,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert done.stdout == b"hello\n", done.stderr.decode()
    assert done.returncode == 3
    # Everything make run keeps is in the checkout's var/.
    assert (root / "var" / "agent" / "credentials.json").is_file()
    assert json.loads((root / "var" / "ready.json").read_text())["port"] == int(
        listen.rsplit(":", 1)[1]
    )
    assert (root / "var" / "cloudassist.db").is_file()
