"""On SQLite an upgrade is one transaction holding the write lock: a migration that fails
halfway leaves the database as it was, and upgrades racing on a new file build it once."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from cloudassist.server.store import schema
from cloudassist.server.store.engine import make_engine

FIRST = schema.FIRST_REVISION

FAILING_MIGRATION = '''"""Fails halfway: makes a table, then raises."""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_built", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO half_built (id) VALUES (1)")
    raise RuntimeError("the migration failed halfway")


def downgrade() -> None:
    op.drop_table("half_built")
'''


@pytest.fixture
def failing_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The project's migrations plus one after head that fails halfway, in place of the
    project's; returns the failing one's revision."""
    head = schema.head_revision()
    failing = f"{int(head) + 1:04d}"
    directory = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, directory, ignore=shutil.ignore_patterns("__pycache__"))
    source = FAILING_MIGRATION.format(revision=failing, down_revision=head)
    (directory / "versions" / f"{failing}_fails_halfway.py").write_text(source)
    monkeypatch.setattr(schema, "MIGRATIONS", directory)
    assert schema.head_revision() == failing
    return failing


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[Path, Engine]]:
    path = tmp_path / "cloudassist.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        yield path, engine
    finally:
        engine.dispose()


def _snapshot(path: Path) -> tuple[list[Any], list[Any]]:
    """Every table, index and trigger with its SQL, and the recorded revisions: read with the
    plain driver, apart from the engine under test."""
    with closing(sqlite3.connect(path)) as db:
        objects = db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        versions = (
            db.execute(f"SELECT version_num FROM {schema.VERSION_TABLE}").fetchall()
            if any(name == schema.VERSION_TABLE for _, name, _, _ in objects)
            else []
        )
    return objects, versions


def _prepare(engine: Engine) -> None:
    schema.prepare(engine)


def _upgrade(engine: Engine) -> None:
    schema.upgrade(engine)


@pytest.mark.parametrize(
    ("start", "run"),
    [(None, _upgrade), (None, _prepare), (FIRST, _upgrade)],
    ids=["migrate a new database", "server on a new database", "migrate from 0001"],
)
@pytest.mark.usefixtures("failing_head")
def test_a_migration_failing_halfway_leaves_the_database_as_it_was(
    database: tuple[Path, Engine], start: str | None, run: Callable[[Engine], None]
) -> None:
    path, engine = database
    if start is not None:
        schema.upgrade(engine, start)
    else:
        engine.connect().close()  # the file exists, without a table
    before = _snapshot(path)
    assert before[1] == ([(start,)] if start else [])

    with pytest.raises(RuntimeError, match="the migration failed halfway"):
        run(engine)

    # Every migration up to the failing one ran (from 0001: 0002's index) and none is kept.
    assert _snapshot(path) == before
    assert schema.state(engine).current == start


def test_upgrades_racing_on_a_new_database_build_the_schema_once(tmp_path: Path) -> None:
    path = tmp_path / "cloudassist.db"
    racers = 2
    engines = [make_engine(f"sqlite:///{path}") for _ in range(racers)]
    start = threading.Barrier(racers)

    def upgrade(engine: Engine) -> schema.Upgrade:
        engine.connect().close()  # connected before the start: both go for the schema at once
        start.wait(timeout=30)
        return schema.upgrade(engine)

    try:
        with ThreadPoolExecutor(racers) as pool:
            done = list(pool.map(upgrade, engines))
    finally:
        for engine in engines:
            engine.dispose()
    head = schema.head_revision()
    assert sorted(d.created for d in done) == [False, True], done
    assert all(d.after == head for d in done), done
    [later] = [d for d in done if not d.created]
    assert later.before == head, "the second found the schema built, and ran nothing"
    assert _snapshot(path)[1] == [(head,)]


def test_a_connection_waits_while_another_holds_a_new_file_to_switch_it_to_wal(
    tmp_path: Path,
) -> None:
    """Another connection holds the write lock of a new (rollback-journal) file: SQLite refuses
    the switch to WAL at once rather than wait, and the new connection tries again."""
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    released = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    released.start()
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        released.join()
        holder.close()
        engine.dispose()
