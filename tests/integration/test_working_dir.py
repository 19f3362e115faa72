"""Working directories as users give them: a relative one is refused by every request that
takes one, with nothing written; an agent refuses one it is sent anyway (by a server from before
the rule); a directory the user the script runs as cannot enter makes the record INVALID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from cloudassist.v1 import agent_pb2, command_pb2_grpc
from cloudassist.v1 import command_pb2 as pb
from tests.integration.conftest import Cluster
from tests.integration.helpers import REGION, error_details, run, watch
from tests.support import AgentProcess, ServerProcess

Stub = command_pb2_grpc.CommandServiceStub
SHELL = pb.COMMAND_TYPE_RUN_SHELL_SCRIPT
BAT = pb.COMMAND_TYPE_RUN_BAT_SCRIPT
POWERSHELL = pb.COMMAND_TYPE_RUN_POWERSHELL_SCRIPT
# The region of the agent behind a server from before the rule (no other test's instances).
OLD_REGION = "cn-older-server"


def create(working_dir: str, kind: int = SHELL, **fields: Any) -> pb.CreateCommandRequest:
    return pb.CreateCommandRequest(
        region_id=REGION,
        name="wd",
        type=kind,  # type: ignore[arg-type]
        command_content=b"pwd",
        working_dir=working_dir,
        **fields,
    )


def run_request(working_dir: str, **fields: Any) -> pb.RunCommandRequest:
    defaults: dict[str, Any] = {"instance_ids": ["i-a"]}
    return pb.RunCommandRequest(
        region_id=REGION,
        type=SHELL,
        command_content=b"pwd",
        working_dir=working_dir,
        **{**defaults, **fields},
    )


# (test id, rpc, request given a saved command's id)
CASES: list[tuple[str, str, Callable[[str], Any]]] = [
    ("create-plain-name", "CreateCommand", lambda _c: create("rel-wd")),
    ("create-dot", "CreateCommand", lambda _c: create("./x")),
    ("create-dotdot", "CreateCommand", lambda _c: create("../x")),
    ("create-tilde", "CreateCommand", lambda _c: create("~/x")),
    ("create-dotdot-inside", "CreateCommand", lambda _c: create("/srv/../etc")),
    ("create-with-client-token", "CreateCommand",
     lambda _c: create("rel-wd", client_token=secrets.token_hex(8))),
    ("create-bat-linux-path", "CreateCommand", lambda _c: create("/srv", BAT)),
    ("create-bat-relative", "CreateCommand", lambda _c: create("app\\logs", BAT)),
    ("create-powershell-drive-relative", "CreateCommand", lambda _c: create("C:app", POWERSHELL)),
    ("modify", "ModifyCommand",
     lambda c: pb.ModifyCommandRequest(region_id=REGION, command_id=c, working_dir="rel-wd")),
    ("modify-with-other-fields", "ModifyCommand",
     lambda c: pb.ModifyCommandRequest(
         region_id=REGION, command_id=c, name="renamed", working_dir="../x")),
    ("invoke", "InvokeCommand",
     lambda c: pb.InvokeCommandRequest(
         region_id=REGION, command_id=c, instance_ids=["i-a"], working_dir="rel-wd")),
    ("invoke-dry-run", "InvokeCommand",
     lambda c: pb.InvokeCommandRequest(
         region_id=REGION, command_id=c, instance_ids=["i-a"], working_dir="./x",
         dry_run=True)),
    ("invoke-periodic", "InvokeCommand",
     lambda c: pb.InvokeCommandRequest(
         region_id=REGION, command_id=c, instance_ids=["i-a"], working_dir="x",
         repeat_mode=pb.REPEAT_MODE_PERIOD, frequency="rate(1h)")),
    ("run", "RunCommand", lambda _c: run_request("rel-wd")),
    ("run-keep-command", "RunCommand", lambda _c: run_request("../x", keep_command=True)),
    ("run-dry-run", "RunCommand", lambda _c: run_request("~", dry_run=True)),
    ("run-rate-controlled", "RunCommand",
     lambda _c: run_request("x", instance_ids=["i-a", "i-b"], max_concurrency="1")),
]  # fmt: skip


@pytest.fixture(scope="module")
def saved(cluster: Cluster) -> str:
    """A command saved with /tmp as its working directory (one: commands count against the
    region's quota)."""
    with cluster.server.sync_channel() as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        return stub.CreateCommand(create("/tmp"), metadata=cluster.server.metadata).command_id


async def _working_dir_of(stub: Stub, command_id: str) -> str:
    listed = await stub.DescribeCommands(
        pb.DescribeCommandsRequest(region_id=REGION, command_id=command_id)
    )
    return listed.commands[0].working_dir


def _assert_refused(error: aio.AioRpcError, working_dir_named: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    info, fields = error_details(error)
    assert (info.reason, info.domain) == ("InvalidParameter.WorkingDir", "cloudassist.v1")
    assert fields == ["working_dir"]
    details = error.details() or ""
    assert details.startswith("working_dir: ")
    assert f"{working_dir_named!r} is not an absolute directory" in details


@pytest.mark.parametrize(("rpc", "build"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
async def test_a_relative_working_dir_is_refused_and_nothing_is_written(
    stub: Stub, cluster: Cluster, saved: str, rpc: str, build: Callable[[str], Any]
) -> None:
    request = build(saved)
    before = cluster.server.resource_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await getattr(stub, rpc)(request)
    _assert_refused(caught.value, request.working_dir)
    assert cluster.server.resource_counts() == before
    assert await _working_dir_of(stub, saved) == "/tmp"


def _write_row(server: ServerProcess, sql: str) -> None:
    """Changes the server's database directly, as a server from before the rule wrote it."""
    if server.db_url is None:
        with contextlib.closing(sqlite3.connect(server.db_path, timeout=30)) as db, db:
            db.execute(sql)
        return
    import psycopg

    with psycopg.connect(server.db_url.replace("postgresql+psycopg://", "postgresql://")) as pg:
        pg.execute(sql.encode())


async def test_a_command_stored_with_a_relative_working_dir_is_not_invoked_there(
    stub: Stub, cluster: Cluster
) -> None:
    command_id = (await stub.CreateCommand(create("/tmp"))).command_id
    await asyncio.to_thread(
        _write_row,
        cluster.server,
        f"UPDATE commands SET working_dir = 'rel-wd' WHERE command_id = '{command_id}'",
    )
    before = cluster.server.resource_counts()
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.InvokeCommand(
            pb.InvokeCommandRequest(region_id=REGION, command_id=command_id, instance_ids=["i-a"])
        )
    _assert_refused(caught.value, "rel-wd")
    assert "the command's 'rel-wd'" in (caught.value.details() or "")
    assert cluster.server.resource_counts() == before
    # An absolute working directory given with the invocation still runs it.
    invoked = await stub.InvokeCommand(
        pb.InvokeCommandRequest(
            region_id=REGION, command_id=command_id, instance_ids=["i-a"], working_dir="/tmp"
        )
    )
    seen = await watch(stub, invoked.invoke_id)
    assert seen.states["i-a"].state == pb.EXECUTION_STATE_SUCCESS
    assert bytes(seen.output["i-a"]) == b"/tmp\n"


@dataclass
class OlderServer:
    """A proxy on the agent stream that sends the agent every task with `working_dir` in place
    of the server's: what a server from before the rule sends for a command it stored then."""

    upstream: str
    working_dir: str
    port: int = 0

    def _rewrite(self, raw: bytes) -> bytes:
        response = agent_pb2.ConnectResponse.FromString(raw)
        kind = response.WhichOneof("message")
        if kind == "dispatch":
            dispatches = [response.dispatch]
        elif kind == "orders":
            dispatches = list(response.orders.dispatches)
        else:
            return raw
        for dispatch in dispatches:
            dispatch.working_dir = self.working_dir
        return response.SerializeToString()

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[None]:
        channel = aio.insecure_channel(self.upstream)

        async def register(raw: bytes, _context: object) -> bytes:
            answer: bytes = await channel.unary_unary("/cloudassist.v1.AgentService/Register")(raw)
            return answer

        async def connect(requests: AsyncIterator[bytes], _context: object) -> AsyncIterator[bytes]:
            call = channel.stream_stream("/cloudassist.v1.AgentService/Connect")()

            async def up() -> None:
                async for raw in requests:
                    await call.write(raw)
                await call.done_writing()

            forward = asyncio.create_task(up())
            try:
                async for raw in call:
                    yield self._rewrite(raw)
            finally:
                forward.cancel()
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await forward

        handlers = {
            "Register": grpc.unary_unary_rpc_method_handler(register),
            "Connect": grpc.stream_stream_rpc_method_handler(connect),
        }
        server = aio.server()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("cloudassist.v1.AgentService", handlers),)
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            yield
        finally:
            await server.stop(None)
            await channel.close()


async def test_the_agent_refuses_a_relative_working_dir_it_is_sent(
    stub: Stub, cluster: Cluster, tmp_path: Path
) -> None:
    """ "." exists wherever the agent runs: before the rule, the script ran in the agent's own
    current directory."""
    older = OlderServer(cluster.server.agent_address, working_dir=".")
    agent = AgentProcess(cluster.server, "i-older", tmp_path, region=OLD_REGION)
    marker = tmp_path / "ran"
    async with older.serve():
        agent.via = f"127.0.0.1:{older.port}"
        try:
            await asyncio.to_thread(agent.start)
            response = await stub.RunCommand(
                pb.RunCommandRequest(
                    region_id=OLD_REGION,
                    type=SHELL,
                    command_content=f"touch {marker}".encode(),
                    instance_ids=["i-older"],
                    working_dir=str(tmp_path),
                )
            )
            seen = await watch(stub, response.invoke_id, OLD_REGION)
        finally:
            await asyncio.to_thread(agent.stop)
    change = seen.states["i-older"]
    assert change.state == pb.EXECUTION_STATE_INVALID, change
    assert change.invoke_record_status == pb.INVOKE_STATUS_FAILED
    assert change.error_code == "DirectoryNotAbsolute"
    assert "'.'" in change.error_info
    assert not marker.exists(), "the script never ran"


@pytest.fixture(scope="module")
def user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.fail("running scripts as another user needs the agents (and tests) to run as root")
    name = f"ca-wd-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


@pytest.fixture
def private_dirs() -> Iterator[Callable[[int], Path]]:
    """Makes directories of mode 0700 in the system's temporary directory (which every user
    can pass through), owned by the uid given; removes them after."""
    made: list[str] = []

    def make(uid: int) -> Path:
        path = tempfile.mkdtemp(prefix="cloudassist-wd-")
        made.append(path)
        os.chown(path, uid, -1)
        return Path(path)

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


async def test_a_working_dir_the_user_cannot_enter_makes_the_record_invalid(
    stub: Stub, user: pwd.struct_passwd, private_dirs: Callable[[int], Path]
) -> None:
    closed = private_dirs(0)  # root's, 0700: the agent (root) could enter it, the user cannot
    marker = private_dirs(user.pw_uid) / "ran"
    invoke_id = await run(
        stub, f"touch {marker}", ["i-a"], username=user.pw_name, working_dir=str(closed)
    )
    seen = await watch(stub, invoke_id)
    change = seen.states["i-a"]
    assert change.state == pb.EXECUTION_STATE_INVALID, change
    assert change.invoke_record_status == pb.INVOKE_STATUS_FAILED
    assert change.error_code == "DirectoryNotAccessible"
    assert user.pw_name in change.error_info
    assert str(closed) in change.error_info
    assert not marker.exists(), "the script never ran"
    assert not seen.output.get("i-a"), "no output"


async def test_a_script_run_as_another_user_starts_in_its_working_dir(
    stub: Stub, user: pwd.struct_passwd, private_dirs: Callable[[int], Path]
) -> None:
    own = private_dirs(user.pw_uid)
    invoke_id = await run(
        stub, 'pwd; id -u; echo "$0"; [ -t 0 ] || cat', ["i-a"], username=user.pw_name,
        working_dir=str(own),
    )  # fmt: skip
    seen = await watch(stub, invoke_id)
    assert seen.states["i-a"].state == pb.EXECUTION_STATE_SUCCESS, seen.states["i-a"]
    cwd, uid, script, *rest = bytes(seen.output["i-a"]).decode().splitlines()
    assert (cwd, int(uid)) == (str(own), user.pw_uid)
    assert script.startswith("/"), "the script is named by its own path, as before"
    assert rest == [], "stdin is empty (/dev/null)"
