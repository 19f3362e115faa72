"""The database schema's revision: inspected, upgraded and checked through Alembic.

A server starts only on a database at the newest revision. A database without any table is
new and is created by running every migration; one at an older revision is left alone until
an operator runs `cloudassist-server migrate`, so that an upgrade is always a decision.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text

from cloudassist.server.store.engine import make_engine

log = logging.getLogger(__name__)

# Looked up at each use, never kept: a test swaps in a copy with a migration of its own.
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
VERSIONS = MIGRATIONS / "versions"
VERSION_TABLE = "alembic_version"
FIRST_REVISION = "0001"
# Any fixed number: servers sharing one PostgreSQL database migrate one at a time.
_PG_MIGRATION_LOCK = 0x636C_6173_6D67


class _WithoutDialectNotes(logging.Filter):
    """Alembic logs which dialect it uses every time it looks at a database: on every server
    start, noise. What it runs ("Running upgrade 0001 -> 0002") is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Context impl", "Will assume"))


logging.getLogger("alembic.runtime.migration").addFilter(_WithoutDialectNotes())


class SchemaError(Exception):
    """The database's schema is not one this server can run on."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: no revision recorded
    head: str
    tables: frozenset[str]

    @property
    def empty(self) -> bool:
        return not (self.tables - {VERSION_TABLE})

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head

    @property
    def newer(self) -> bool:
        """At a revision this server's migrations do not have: a newer server's."""
        return self.current is not None and not known(self.current)


@dataclass(frozen=True)
class Upgrade:
    """What `upgrade` did."""

    before: str | None
    after: str | None
    # The database was empty: every migration made it.
    created: bool
    # It had 0.1.0's tables and no revision: recorded as FIRST_REVISION, then upgraded.
    stamped: bool


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = scripts().get_current_head()
    assert head is not None, "the migrations have one head"
    return head


def known(revision: str) -> bool:
    """Whether `revision` is one of this server's migrations."""
    try:
        return scripts().get_revision(revision) is not None
    except CommandError:  # Alembic's answer for an id it has no script for
        return False


def _state(connection: Connection) -> SchemaState:
    current = MigrationContext.configure(connection).get_current_revision()
    tables = frozenset(inspect(connection).get_table_names())
    return SchemaState(current=current, head=head_revision(), tables=tables)


def state(engine: Engine) -> SchemaState:
    with engine.connect() as connection:
        return _state(connection)


@contextlib.contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction that holds the migration lock: everything done on it
    is kept together or not at all, and one process at a time migrates a database.

    Alembic finds the connection in a transaction and then begins and commits none of its
    own (see migrations/env.py), so no migration is kept before the last one has run.
    """
    if engine.dialect.name == "sqlite":
        with _sqlite_migrating(engine) as connection:
            yield connection
        return
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
        yield connection


@contextlib.contextmanager
def _sqlite_migrating(engine: Engine) -> Iterator[Connection]:
    """SQLite's driver begins a transaction only before a row is written, so a CREATE TABLE
    would be kept at once and a migration failing halfway would leave half a schema. With the
    driver's own transaction handling off, an explicit BEGIN IMMEDIATE makes the whole upgrade
    one transaction, and takes SQLite's write lock at once: another process migrating the
    same file waits for it (up to the busy timeout), then finds the schema built."""
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        # SQLAlchemy begins a transaction of its own here too, in name only (autocommit), so
        # that Alembic sees one and leaves BEGIN and COMMIT to this function.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            # SQLite ends a transaction itself on some errors (a full disk, say).
            if _sqlite_in_transaction(connection):
                connection.exec_driver_sql("ROLLBACK")
            raise
        connection.exec_driver_sql("COMMIT")


def _sqlite_in_transaction(connection: Connection) -> bool:
    driver = connection.connection.dbapi_connection
    return bool(getattr(driver, "in_transaction", False))


def _first_revision_tables() -> frozenset[str]:
    script = scripts().get_revision(FIRST_REVISION)
    assert script is not None
    return frozenset(script.module.TABLES)


def upgrade(engine: Engine, revision: str = "head") -> Upgrade:
    """Upgrades the schema to `revision`.

    A database made before migrations existed (0.1.0's tables, no revision) is recorded as
    revision 0001 first; any other database without a revision but with tables is refused,
    and so is one at a revision this server does not know.
    """
    with _migrating(engine) as connection:
        return _upgrade(connection, revision)


def _upgrade(connection: Connection, revision: str) -> Upgrade:
    before = _state(connection)
    config = _config(connection)
    if before.newer:
        assert before.current is not None
        raise SchemaError(_newer(before.current))
    stamped = before.current is None and not before.empty
    if stamped:
        missing = _first_revision_tables() - before.tables
        if missing:
            raise SchemaError(
                "the database has tables but no schema revision, and lacks "
                f"{', '.join(sorted(missing))}: it was not made by cloudassist"
            )
        command.stamp(config, FIRST_REVISION)
        log.info("database without a revision recorded as revision %s", FIRST_REVISION)
    command.upgrade(config, revision)
    after = _state(connection)
    return Upgrade(before.current, after.current, created=before.empty, stamped=stamped)


def downgrade(engine: Engine, revision: str) -> None:
    """Runs the migrations' downgrades down to `revision` ("base": no table left). For
    development and tests: neither the server nor `migrate` ever downgrades."""
    with _migrating(engine) as connection:
        command.downgrade(_config(connection), revision)


def _newer(revision: str) -> str:
    return (
        f"the database is at schema revision {revision}, which this server does not know: "
        "it was migrated by a newer cloudassist-server"
    )


def prepare(engine: Engine) -> SchemaState:
    """Makes a new (empty) database current; refuses any other that is not current."""
    found = state(engine)
    if found.up_to_date:
        return found
    # Looked at again under the migration lock: another server may be creating the schema
    # right now, and two reads outside it could see its version table missing, then its tables.
    with _migrating(engine) as connection:
        found = _state(connection)
        if found.empty:
            _upgrade(connection, "head")
            log.info("created the database schema at revision %s", found.head)
            return _state(connection)
    if found.up_to_date:
        return found
    if found.newer:
        assert found.current is not None
        raise SchemaError(_newer(found.current))
    at = f"schema revision {found.current}" if found.current else "no schema revision"
    raise SchemaError(
        f"the database is at {at} and this server needs revision {found.head}: "
        "run `cloudassist-server migrate` (with the same --db or --data-dir) to upgrade it"
    )


def new_revision(message: str, directory: Path | None = None) -> Path:
    """Writes the next migration (into `directory`, by default the project's) and returns its
    path: what the SQLModel tables have that the migrations up to head do not make, as
    Alembic's autogenerate finds it against a scratch SQLite database at head. Its operations
    are in batch form, which runs on SQLite and PostgreSQL alike. Read it before committing:
    autogenerate sees a rename as a drop and an add, and never moves data."""
    rev_id = f"{int(head_revision()) + 1:04d}"
    with tempfile.TemporaryDirectory() as scratch:
        engine = make_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            upgrade(engine)
            with engine.begin() as connection:
                config = _config(connection)
                if directory is not None:
                    locations = os.pathsep.join([str(VERSIONS), str(directory)])
                    config.set_main_option("version_locations", locations)
                # Alembic reports on stdout; the caller's stdout is for the path.
                with contextlib.redirect_stdout(sys.stderr):
                    script = command.revision(
                        config, message, autogenerate=True, rev_id=rev_id, version_path=directory
                    )
        finally:
            engine.dispose()
    assert isinstance(script, Script)
    return Path(script.path)
