"""Admin keys that survive any one server: `--admin-key-file` (a key the operator provides,
accepted by every server started with it) and `cloudassist-server admin-key` (a new admin key
issued straight into the database, accepted at once by the servers running on it)."""

from __future__ import annotations

import secrets
import stat
import subprocess
from pathlib import Path

import grpc
import pytest

from cloudassist.v1 import admin_pb2, admin_pb2_grpc
from tests import support
from tests.support import BIN, ServerProcess

SERVER = str(BIN / "cloudassist-server")


def _key_file(directory: Path) -> tuple[Path, str]:
    """A key file as an operator writes it (with a final newline), and its key."""
    key = f"k-{secrets.token_hex(10)}.{secrets.token_hex(32)}"
    path = directory / "secret" / "admin-key"
    path.parent.mkdir(parents=True)
    path.write_text(key + "\n")
    return path, key


def _shared_database(tmp_path: Path) -> str:
    """One database for several servers: PostgreSQL when the suite runs on it."""
    if support.database_factory is not None:
        return support.database_factory()
    return f"sqlite:///{tmp_path / 'shared.db'}"


def _accounts(server: ServerProcess, key: str) -> list[str]:
    """The account names an admin call with `key` lists (UNAUTHENTICATED raises)."""
    with server.sync_channel() as channel:
        response = admin_pb2_grpc.AdminServiceStub(channel).ListAccounts(
            admin_pb2.ListAccountsRequest(), metadata=(("authorization", f"Bearer {key}"),)
        )
    return [a.name for a in response.accounts]


def _database_flags(server: ServerProcess) -> list[str]:
    """The flags that name `server`'s database to a subcommand."""
    if server.db_url is not None:
        return ["--db", server.db_url]
    return ["--data-dir", str(server.workdir)]


def test_a_server_with_an_admin_key_file_accepts_that_key_and_writes_no_admin_key(
    tmp_path: Path,
) -> None:
    path, key = _key_file(tmp_path)
    server = ServerProcess(tmp_path / "server", "--admin-key-file", str(path))
    try:
        server.start()
        assert _accounts(server, key) == ["admin"]
        assert not (server.workdir / "admin.key").exists()
        key_id = key.split(".")[0]
        assert f"the admin key {key_id} of {path}: created the admin account with it" in (
            server.log()
        )
        assert key.split(".")[1] not in server.log()
    finally:
        server.stop()


def test_servers_on_one_database_with_the_same_key_file_all_accept_it(tmp_path: Path) -> None:
    path, key = _key_file(tmp_path)
    url = _shared_database(tmp_path)
    # The first server has no file: it makes the admin account and its own admin.key.
    first = ServerProcess(tmp_path / "first", db_url=url)
    with_file = [
        ServerProcess(tmp_path / name, "--admin-key-file", str(path), db_url=url)
        for name in ("second", "third")
    ]
    servers = [first, *with_file]
    try:
        for server in servers:
            server.start()
        for server in servers:
            assert _accounts(server, key) == ["admin"]
            assert _accounts(server, first.admin_key) == ["admin"]
        assert [(s.workdir / "admin.key").exists() for s in with_file] == [False, False]
        key_id = key.split(".")[0]
        assert "registered it for the admin account" in with_file[0].log()
        assert f"the admin key {key_id} of {path}: it is a key of the admin account" in (
            with_file[1].log()
        )
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("k-abc.not-a-secret\n", "expected one line '<key id>.<secret>'"),
        (None, "cannot read it: No such file or directory"),
    ],
)
def test_a_server_refuses_a_bad_admin_key_file_in_one_line(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "admin-key"
    if content is not None:
        path.write_text(content)
    done = subprocess.run(
        [SERVER, "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"),
         "--admin-key-file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith(f"cloudassist-server: --admin-key-file {path}: {reason}")
    assert done.stderr.count("\n") == 1
    assert "not-a-secret" not in done.stderr
    assert not (tmp_path / "data" / "admin.key").exists()


def _admin_key_command(server: ServerProcess, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SERVER, "admin-key", *_database_flags(server), *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _audited(server: ServerProcess, key: str) -> list[tuple[str, list[str], str]]:
    with server.sync_channel() as channel:
        response = admin_pb2_grpc.AdminServiceStub(channel).ListAuditEvents(
            admin_pb2.ListAuditEventsRequest(method="cloudassist-server admin-key"),
            metadata=(("authorization", f"Bearer {key}"),),
        )
    return [(e.key_id, list(e.resource_ids), e.code) for e in response.events]


def test_admin_key_issues_a_key_that_a_running_server_accepts_at_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    try:
        server.start()
        # The key of the first start is lost: a new one comes from the database alone.
        (server.workdir / "admin.key").unlink()
        done = _admin_key_command(server, "--description", "recovery")
        assert done.returncode == 0, done.stderr
        key = done.stdout.strip()
        assert done.stdout == key + "\n"
        assert _accounts(server, key) == ["admin"]
        key_id = key.split(".")[0]
        assert f"issued admin API key {key_id} of account admin" in done.stderr
        assert _audited(server, key) == [(key_id, [key_id], "OK")]
        with server.sync_channel() as channel:
            keys = admin_pb2_grpc.AdminServiceStub(channel).ListApiKeys(
                admin_pb2.ListApiKeysRequest(), metadata=(("authorization", f"Bearer {key}"),)
            )
        assert {k.key_id: k.description for k in keys.keys}[key_id] == "recovery"
    finally:
        server.stop()


def test_admin_key_writes_the_key_to_a_file_of_mode_0600(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server")
    output = tmp_path / "recovered.key"
    output.write_text("an older key\n")
    output.chmod(0o644)
    try:
        server.start()
        done = _admin_key_command(server, "--output", str(output))
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""
        assert f"written to {output} (mode 0600)" in done.stderr
        assert stat.S_IMODE(output.stat().st_mode) == 0o600
        assert _accounts(server, output.read_text().strip()) == ["admin"]
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        server.stop()


def test_admin_key_refuses_a_missing_database_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [SERVER, "admin-key", "--data-dir", str(tmp_path / "nothing-here")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"cloudassist-server admin-key: no database at {tmp_path / 'nothing-here'}/"
        "cloudassist.db: give the --db or --data-dir the server uses\n"
    )
    assert not (tmp_path / "nothing-here").exists()


def test_a_key_revoked_through_the_api_stays_revoked_when_a_server_restarts_with_its_file(
    tmp_path: Path,
) -> None:
    path, key = _key_file(tmp_path)
    server = ServerProcess(tmp_path / "server", "--admin-key-file", str(path))
    try:
        server.start()
        done = _admin_key_command(server)
        assert done.returncode == 0, done.stderr
        other = done.stdout.strip()
        with server.sync_channel() as channel:
            admin_pb2_grpc.AdminServiceStub(channel).RevokeApiKey(
                admin_pb2.RevokeApiKeyRequest(key_id=key.split(".")[0]),
                metadata=(("authorization", f"Bearer {other}"),),
            )
        server.stop()
        server.start()
        assert "it was revoked: it is not accepted" in server.log()
        with pytest.raises(grpc.RpcError) as refused:
            _accounts(server, key)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert _accounts(server, other) == ["admin"]
    finally:
        server.stop()
