"""Schema migrations on a real database: SQLite here, PostgreSQL with CLOUDASSIST_TEST_DB=postgres.

Databases are made in-process at a given revision and filled with rows the way cloudassist
0.1.0 wrote them; `cloudassist-server` and `cloudassist-server migrate` then run on them as
real processes, and what was stored is read back through the gRPC API.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, func, insert, inspect, make_url, select, text
from sqlmodel import SQLModel

from cloudassist.server.domain import ids
from cloudassist.server.domain.credentials import hash_secret, new_api_key, new_secret
from cloudassist.server.store import schema, tables  # noqa: F401  (tables: the SQLModel metadata)
from cloudassist.server.store.engine import make_engine
from cloudassist.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    command_pb2,
    command_pb2_grpc,
    instance_pb2,
    instance_pb2_grpc,
    tag_pb2,
)
from tests import support
from tests.support import BIN, ServerProcess, client_channel, wait_until

REGION = "cn-hangzhou"
FIRST = schema.FIRST_REVISION
HEAD = schema.head_revision()


def _new_database(tmp_path: Path) -> str:
    """A URL of a database that does not exist yet (SQLite: `migrate` refuses it, the server
    or `schema.upgrade` creates it) or has no table (PostgreSQL)."""
    if support.database_factory is not None:
        return support.database_factory()
    return f"sqlite:///{tmp_path / 'cloudassist.db'}"


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _cli(url: str, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`cloudassist-server ARGS --db URL --data-dir WORKDIR`, to its end."""
    argv = [str(BIN / "cloudassist-server"), *args, "--db", url, "--data-dir", str(workdir)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _migrate(url: str, workdir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return _cli(url, workdir, "migrate", *flags)


def _refused(url: str, workdir: Path) -> str:
    """Starts a server on the database, which must exit by itself, failing, before it
    listens. Returns what it wrote on stderr."""
    ready = workdir / "ready.json"
    done = _cli(url, workdir, "--listen", "127.0.0.1:0", "--ready-file", str(ready))
    assert done.returncode != 0, f"the server ran on the database:\n{done.stderr}"
    assert not ready.exists(), "the server listened before refusing the database"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


def _schema_diff(url: str) -> list[Any]:
    """What Alembic's autogenerate finds between the database and the SQLModel tables."""
    with _engine(url) as engine, engine.connect() as connection:
        diff: list[Any] = compare_metadata(
            MigrationContext.configure(connection), SQLModel.metadata
        )
    return diff


# The tables the revisions after the first add, empty after an upgrade.
ADDED_SINCE_FIRST = {"invocation_days": 0}


def _row_counts(url: str) -> dict[str, int]:
    with _engine(url) as engine, engine.connect() as connection:
        metadata = MetaData()
        metadata.reflect(connection)
        return {
            name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in metadata.tables.items()
            if name != schema.VERSION_TABLE
        }


def _first_revision_tables() -> set[str]:
    script = schema.scripts().get_revision(FIRST)
    assert script is not None
    return set(script.module.TABLES)


# Seeding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    """What was written into the database, to be found again after the upgrade."""

    admin_token: str
    ops_account_id: str
    command_id: str
    content: bytes
    invoke_id: str
    instance_id: str
    record_id: str
    exit_code: int
    output: bytes
    counts: dict[str, int]


def _seed(url: str, workdir: Path) -> Seeded:
    """Rows in every table of revision 0001, as a 0.1.0 server that ran a command once left
    them. Written through the tables reflected from the database itself, so that they fit the
    old schema whatever the models say now. The admin's API key is made as the server's
    bootstrap makes it and written where the server would have put it (`admin.key`)."""
    now = int(time.time() * 1000)
    earlier = now - 3_600_000
    admin_id, ops_id = ids.new_id("a"), ids.new_id("a")
    admin_key_id, admin_secret, admin_token = new_api_key()
    ops_key_id, ops_secret, _ = new_api_key()
    activation_id = ids.new_id("act")
    command_id, invoke_id, record_id = ids.command_id(), ids.invoke_id(), ids.record_id()
    instance_id = "i-old"
    content = '#!/bin/sh\necho "{{greeting}} from $(hostname) — ünïcode"\nexit 3\n'.encode()
    chunks = [b"hello from web-1 \xe2\x80\x94 \xc3\xbcn\xc3\xafcode\n", bytes(range(256))]
    output = b"".join(chunks)
    rows: dict[str, list[dict[str, Any]]] = {
        "accounts": [
            {"account_id": admin_id, "name": "admin", "admin": True, "created_ms": earlier},
            {"account_id": ops_id, "name": "ops", "admin": False, "created_ms": earlier + 1},
        ],
        "api_keys": [
            {"key_id": admin_key_id, "account_id": admin_id,
             "secret_hash": hash_secret(admin_secret), "description": "created at first start",
             "created_ms": earlier, "revoked_ms": None},
            {"key_id": ops_key_id, "account_id": ops_id, "secret_hash": hash_secret(ops_secret),
             "description": "ci", "created_ms": earlier + 2, "revoked_ms": earlier + 3},
        ],
        "activations": [
            {"activation_id": activation_id, "account_id": admin_id, "region_id": REGION,
             "code_hash": hash_secret(new_secret()), "description": "web fleet",
             "max_registrations": 10, "registrations": 1, "expires_ms": now + 86_400_000,
             "created_ms": earlier + 4},
        ],
        "instances": [
            {"instance_id": instance_id, "account_id": admin_id, "region_id": REGION,
             "secret_hash": hash_secret(new_secret()), "activation_id": activation_id,
             "os_type": "LINUX", "hostname": "web-1", "agent_version": "0.1.0", "online": False,
             "server_id": "", "last_heartbeat_ms": earlier + 60_000, "registered_ms": earlier + 5,
             "invocation_count": 1, "last_invoked_ms": earlier + 10_000, "boot_id": "boot-1",
             "extra_command_types": "[]"},
        ],
        "instance_tags": [
            {"instance_id": instance_id, "key": "role", "value": "web", "source": "api"},
            {"instance_id": instance_id, "key": "rack", "value": "r7", "source": "agent"},
        ],
        "commands": [
            {"command_id": command_id, "account_id": admin_id, "region_id": REGION,
             "name": "greet", "type": "RUN_SHELL_SCRIPT", "content": content,
             "description": "says hello", "working_dir": "/tmp", "timeout_seconds": 120,
             "enable_parameter": True, "parameter_names": '["greeting"]', "launcher": "",
             "invoke_times": 1, "created_ms": earlier + 6},
        ],
        "command_tags": [{"command_id": command_id, "key": "team", "value": "ops"}],
        "idempotency_tokens": [
            {"account_id": admin_id, "region_id": REGION, "operation": "CreateCommand",
             "client_token": "token-1", "request_hash": "0" * 64,
             "result": json.dumps({"command_id": command_id}), "created_ms": earlier + 6},
        ],
        "invocations": [
            {"invoke_id": invoke_id, "account_id": admin_id, "region_id": REGION,
             "command_id": command_id, "command_name": "greet", "command_type": "RUN_SHELL_SCRIPT",
             "content": content, "enable_parameter": True, "parameters": '{"greeting": "hi"}',
             "repeat_mode": "ONCE", "frequency": "", "timeout_seconds": 120, "working_dir": "/tmp",
             "username": "", "env": "{}", "launcher": "", "max_concurrency": None,
             "max_errors": None, "delivery_timeout_ms": 60_000, "file": "",
             "output_limit": 10 * 1024 * 1024, "status": "FINISHED", "one_shot": True,
             "next_fire_ms": None, "created_ms": earlier + 10_000},
        ],
        "invocation_instances": [
            {"invoke_id": invoke_id, "instance_id": instance_id, "state": "FAILED",
             "status": "FINISHED", "repeats": 1, "stopped": False, "latest_record_id": record_id,
             "boot_id": "boot-1", "exit_code": 3, "error_code": "", "error_info": "",
             "created_ms": earlier + 10_000, "start_ms": earlier + 10_100,
             "finish_ms": earlier + 10_200, "stop_ms": None, "updated_ms": earlier + 10_200},
        ],
        "records": [
            {"record_id": record_id, "invoke_id": invoke_id, "instance_id": instance_id,
             "state": "FAILED", "exit_code": 3, "output_size": len(output),
             "output_limit": 10 * 1024 * 1024, "dropped": 0, "agent_done": True,
             "error_code": "", "error_info": "", "repeats": 1, "created_ms": earlier + 10_000,
             "start_ms": earlier + 10_100, "finish_ms": earlier + 10_200, "stop_ms": None,
             "deadline_ms": None, "delivered": False, "held": False},
        ],
        "output_chunks": [
            {"record_id": record_id, "offset": 0, "end_offset": len(chunks[0]), "data": chunks[0]},
            {"record_id": record_id, "offset": len(chunks[0]), "end_offset": len(output),
             "data": chunks[1]},
        ],
        "audit_events": [
            {"event_id": ids.new_id("ev"), "time_ms": earlier + 10_000, "account_id": admin_id,
             "key_id": admin_key_id, "method": "/cloudassist.v1.CommandService/InvokeCommand",
             "resource_ids": json.dumps([invoke_id]), "code": "OK", "peer": "ipv4:127.0.0.1:40000"},
        ],
        "servers": [
            # A server that is gone: the next server to start forgets it.
            {"server_id": ids.new_id("s"), "address": "127.0.0.1:50051", "heartbeat_ms": earlier},
        ],
    }  # fmt: skip
    assert set(rows) == _first_revision_tables(), "a row in every table of revision 0001"
    with _engine(url) as engine, engine.begin() as connection:
        metadata = MetaData()
        metadata.reflect(connection)
        for name, values in rows.items():
            connection.execute(insert(metadata.tables[name]), values)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "admin.key").write_text(admin_token + "\n")
    return Seeded(
        admin_token=admin_token,
        ops_account_id=ops_id,
        command_id=command_id,
        content=content,
        invoke_id=invoke_id,
        instance_id=instance_id,
        record_id=record_id,
        exit_code=3,
        output=output,
        counts={name: len(values) for name, values in rows.items()},
    )


async def _check_served(server: ServerProcess, seeded: Seeded) -> None:
    """Everything seeded reads back through the API, byte for byte, with the old admin key."""
    assert server.admin_key == seeded.admin_token
    async with client_channel(server) as channel:
        commands = command_pb2_grpc.CommandServiceStub(channel)
        described = await commands.DescribeCommands(
            command_pb2.DescribeCommandsRequest(region_id=REGION, command_id=seeded.command_id)
        )
        assert [c.command_id for c in described.commands] == [seeded.command_id]
        command = described.commands[0]
        assert command.command_content == seeded.content
        assert (command.name, command.description, command.timeout_seconds) == (
            "greet",
            "says hello",
            120,
        )
        assert list(command.parameter_names) == ["greeting"]
        assert list(command.tags) == [tag_pb2.Tag(key="team", value="ops")]
        assert command.invoke_times == 1

        results = await commands.DescribeInvocationResults(
            command_pb2.DescribeInvocationResultsRequest(
                region_id=REGION, invoke_id=seeded.invoke_id
            )
        )
        assert [r.record_id for r in results.invocation_results] == [seeded.record_id]
        result = results.invocation_results[0]
        assert result.instance_id == seeded.instance_id
        assert result.state == command_pb2.EXECUTION_STATE_FAILED
        assert result.HasField("exit_code")
        assert result.exit_code == seeded.exit_code
        assert result.output == seeded.output
        assert result.output_size == len(seeded.output)

        output = await commands.GetInvocationOutput(
            command_pb2.GetInvocationOutputRequest(
                region_id=REGION, invoke_id=seeded.invoke_id, instance_id=seeded.instance_id
            )
        )
        assert output.data == seeded.output
        assert (output.record_id, output.total_size, output.eof) == (
            seeded.record_id,
            len(seeded.output),
            True,
        )

        instances = await instance_pb2_grpc.InstanceServiceStub(channel).DescribeInstances(
            instance_pb2.DescribeInstancesRequest(
                region_id=REGION, instance_ids=[seeded.instance_id]
            )
        )
        [instance] = instances.instances
        assert (instance.hostname, instance.agent_version, instance.online) == (
            "web-1",
            "0.1.0",
            False,
        )
        assert {(t.key, t.value) for t in instance.tags} == {("role", "web"), ("rack", "r7")}

        admin = admin_pb2_grpc.AdminServiceStub(channel)
        accounts = await admin.ListAccounts(admin_pb2.ListAccountsRequest())
        assert {a.name for a in accounts.accounts} == {"admin", "ops"}
        keys = await admin.ListApiKeys(
            admin_pb2.ListApiKeysRequest(account_id=seeded.ops_account_id)
        )
        [ops_key] = keys.keys
        assert ops_key.description == "ci"
        assert ops_key.HasField("revocation_time")


async def _serve_and_check(url: str, workdir: Path, seeded: Seeded) -> None:
    """A server starts on the upgraded database, serves what was stored, and changes no row
    but its own presence."""
    server = ServerProcess(workdir, db_url=url)
    server.start()
    try:
        await _check_served(server, seeded)
    finally:
        assert server.stop() == 0, server.log()
    counts = _row_counts(url)
    # A server records itself in `servers` while it runs, and forgets stale ones.
    assert counts.pop("servers") == 0
    expected = {**seeded.counts, **ADDED_SINCE_FIRST}
    assert counts == {k: v for k, v in expected.items() if k != "servers"}


# Tests --------------------------------------------------------------------------------------


async def test_a_database_at_the_first_revision_is_refused_then_migrated_with_its_data(
    tmp_path: Path,
) -> None:
    url = _new_database(tmp_path)
    workdir = tmp_path / "server"
    with _engine(url) as engine:
        schema.upgrade(engine, FIRST)
    seeded = _seed(url, workdir)

    refusal = _refused(url, workdir)
    assert f"schema revision {FIRST}" in refusal
    assert f"needs revision {HEAD}" in refusal
    assert "cloudassist-server migrate" in refusal

    shown = _migrate(url, workdir, "--show")
    assert shown.returncode == 1, shown.stderr
    assert f"database revision: {FIRST}\n" in shown.stdout
    assert f"this server needs: {HEAD}\n" in shown.stdout

    migrated = _migrate(url, workdir)
    assert migrated.returncode == 0, migrated.stderr
    assert f"upgraded the database from revision {FIRST} to {HEAD}" in migrated.stdout
    assert _row_counts(url) == {**seeded.counts, **ADDED_SINCE_FIRST}
    assert _schema_diff(url) == [], "0001 upgraded to head is the schema of the models"

    again = _migrate(url, workdir)
    assert again.returncode == 0, again.stderr
    assert f"the database is already at revision {HEAD}" in again.stdout
    current = _migrate(url, workdir, "--show")
    assert current.returncode == 0
    assert f"database revision: {HEAD}\n" in current.stdout

    await _serve_and_check(url, workdir, seeded)


async def test_a_database_of_0_1_0_without_a_revision_is_stamped_and_upgraded(
    tmp_path: Path,
) -> None:
    url = _new_database(tmp_path)
    workdir = tmp_path / "server"
    # 0.1.0 made its tables with create_all: revision 0001's tables and no version table.
    with _engine(url) as engine:
        schema.upgrade(engine, FIRST)
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE {schema.VERSION_TABLE}"))
        assert schema.state(engine).current is None
    seeded = _seed(url, workdir)

    refusal = _refused(url, workdir)
    assert "no schema revision" in refusal
    assert f"needs revision {HEAD}" in refusal
    assert "cloudassist-server migrate" in refusal

    shown = _migrate(url, workdir, "--show")
    assert shown.returncode == 1
    assert "database revision: none (cloudassist 0.1.0" in shown.stdout

    migrated = _migrate(url, workdir)
    assert migrated.returncode == 0, migrated.stderr
    assert f"as revision {FIRST}, then upgraded it to revision {HEAD}" in migrated.stdout
    assert _row_counts(url) == {**seeded.counts, **ADDED_SINCE_FIRST}
    assert _schema_diff(url) == []

    await _serve_and_check(url, workdir, seeded)


def test_tables_without_a_revision_that_0_1_0_did_not_make_are_refused(tmp_path: Path) -> None:
    url = _new_database(tmp_path)
    with _engine(url) as engine, engine.begin() as connection:
        connection.execute(text("CREATE TABLE commands (command_id VARCHAR(64) PRIMARY KEY)"))
    migrated = _migrate(url, tmp_path / "server")
    assert migrated.returncode == 1
    assert "has tables but no schema revision" in migrated.stderr
    assert "it was not made by cloudassist" in migrated.stderr
    assert _row_counts(url) == {"commands": 0}, "nothing was created"


def test_a_database_at_a_newer_revision_is_refused_by_the_server_and_by_migrate(
    tmp_path: Path,
) -> None:
    url = _new_database(tmp_path)
    workdir = tmp_path / "server"
    with _engine(url) as engine:
        schema.upgrade(engine)
        with engine.begin() as connection:
            connection.execute(text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '9999'"))
    newer = "schema revision 9999, which this server does not know"

    refusal = _refused(url, workdir)
    assert newer in refusal
    assert "a newer cloudassist-server" in refusal

    migrated = _migrate(url, workdir)
    assert migrated.returncode == 1
    assert newer in migrated.stderr
    assert "a newer cloudassist-server" in migrated.stderr
    assert "Traceback" not in migrated.stderr, migrated.stderr

    shown = _migrate(url, workdir, "--show")
    assert shown.returncode == 1
    assert "database revision: 9999 (newer than this server)" in shown.stdout

    with _engine(url) as engine:
        assert schema.state(engine).current == "9999", "the revision was left alone"


def test_the_migrations_build_exactly_the_schema_of_the_models(tmp_path: Path) -> None:
    """Alembic's autogenerate compares the tables, columns, types, nullability, indexes and
    unique constraints the migrations made with `server/store/tables.py`. A change to the
    models without a migration for it (or a migration that does something else) fails here,
    on SQLite and on PostgreSQL: this is what keeps future table changes honest."""
    url = _new_database(tmp_path)
    with _engine(url) as engine:
        schema.upgrade(engine, FIRST)
    # The check sees a difference: at 0001 the index 0002 adds is missing.
    missing = [d for d in _schema_diff(url) if d[0] == "add_index"]
    assert [d[1].name for d in missing] == ["ix_records_state"], _schema_diff(url)

    with _engine(url) as engine:
        schema.upgrade(engine)
        assert schema.state(engine).current == HEAD
    assert _schema_diff(url) == []


def test_every_migration_downgrades_and_upgrades_again(tmp_path: Path) -> None:
    url = _new_database(tmp_path)
    with _engine(url) as engine:
        schema.upgrade(engine)
        schema.downgrade(engine, "base")
        emptied = schema.state(engine)
        assert emptied.current is None
        assert emptied.empty, f"tables left after downgrading: {sorted(emptied.tables)}"

        done = schema.upgrade(engine)
        assert (done.before, done.after, done.created) == (None, HEAD, True)
    assert _schema_diff(url) == []

    # One step at a time too: each downgrade undoes exactly its upgrade.
    with _engine(url) as engine:
        schema.downgrade(engine, FIRST)
        assert schema.state(engine).current == FIRST
    # 0003's table and 0002's index.
    assert sorted(d[0] for d in _schema_diff(url)) == ["add_index", "add_table"]
    with _engine(url) as engine:
        schema.upgrade(engine)
    assert _schema_diff(url) == []


def _sqlite_migrations_on_a_new_database_at_once(url: str, tmp_path: Path) -> None:
    path = Path(str(make_url(url).database))
    refused = _migrate(url, tmp_path / "server")
    assert refused.returncode == 1, refused.stdout
    assert refused.stderr.strip() == (
        f"cloudassist-server migrate: no database at {path}: give the --db or --data-dir the "
        "server uses (a new database is created by the server itself on its first start)"
    )
    assert not path.exists(), "migrate made a database"

    with _engine(url) as engine:
        engine.connect().close()  # the file exists, without a table
    argv = [str(BIN / "cloudassist-server"), "migrate", "--db", url]
    runs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    reports = sorted(out.strip() for out, _ in outputs)
    assert reports == [
        f"created the database schema at revision {HEAD}",
        f"the database is already at revision {HEAD}",
    ], outputs
    with _engine(url) as engine, engine.connect() as connection:
        versions = connection.execute(text(f"SELECT version_num FROM {schema.VERSION_TABLE}"))
        assert versions.all() == [(HEAD,)]
    assert _schema_diff(url) == []


def _postgres_waiting_on_advisory_locks(url: str) -> int:
    with _engine(url) as engine, engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            ).scalar_one()
        )


def test_servers_and_migrations_on_a_new_database_at_once(
    tmp_path: Path, database_backend: str
) -> None:
    """PostgreSQL: servers sharing a database take an advisory lock to migrate, so several
    starting together on a new database all come up, one of them having made the schema; and
    `migrate` waits while another holds the lock. SQLite (one server): `migrate` refuses a
    file that does not exist, and two `migrate` runs at once on an empty file both succeed,
    one creating the schema in one transaction holding the write lock, the other finding it
    current."""
    url = _new_database(tmp_path)
    if database_backend != "postgres":
        _sqlite_migrations_on_a_new_database_at_once(url, tmp_path)
        return

    servers = [ServerProcess(tmp_path / f"server-{n}", db_url=url) for n in range(3)]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(ServerProcess.start, servers))
        assert all(server.running() for server in servers)
        # The schema was made once, and the admin account too: one server wrote the key.
        assert servers[0].query(f"SELECT version_num FROM {schema.VERSION_TABLE}") == [(HEAD,)]
        keys = [s for s in servers if (s.workdir / "admin.key").exists()]
        assert len(keys) == 1, [s.log() for s in servers]
        assert servers[0].query("SELECT count(*) FROM servers") == [(len(servers),)]
    finally:
        codes = [server.stop() for server in servers]
    assert codes == [0] * len(servers), [s.log() for s in servers]
    assert _schema_diff(url) == []

    # While the migration lock is held elsewhere, `migrate` waits for it.
    other = _new_database(tmp_path)
    with _engine(other) as engine, engine.begin() as holder:
        holder.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": schema._PG_MIGRATION_LOCK}
        )
        argv = [str(BIN / "cloudassist-server"), "migrate", "--db", other]
        waiting = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(
                lambda: (
                    _postgres_waiting_on_advisory_locks(other) == 1 or waiting.poll() is not None
                ),
                30,
                "migrate to wait for the migration lock",
            )
            assert waiting.poll() is None, "migrate ran while another held the migration lock"
            assert inspect(holder).get_table_names() == [], "nothing was made meanwhile"
        except BaseException:
            waiting.kill()
            waiting.communicate()
            raise
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert f"created the database schema at revision {HEAD}" in out


@pytest.mark.parametrize("revision", [FIRST, HEAD])
def test_show_changes_nothing(tmp_path: Path, revision: str) -> None:
    url = _new_database(tmp_path)
    with _engine(url) as engine:
        schema.upgrade(engine, revision)
    shown = _migrate(url, tmp_path / "server", "--show")
    assert shown.returncode == (0 if revision == HEAD else 1)
    assert f"database revision: {revision}\n" in shown.stdout
    with _engine(url) as engine:
        assert schema.state(engine).current == revision
