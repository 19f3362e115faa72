"""The database schema's revision: inspected, upgraded and checked through Alembic.

A server starts only on a database at the newest revision. A database without any table is
new and is created by running every migration; one at an older revision is left alone until
an operator runs `cloudassist-server migrate`, so that an upgrade is always a decision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version"
FIRST_REVISION = "0001"
# Any fixed number: servers sharing one PostgreSQL database migrate one at a time.
_PG_MIGRATION_LOCK = 0x636C_6173_6D67


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


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def head_revision() -> str:
    head = scripts().get_current_head()
    assert head is not None, "the migrations have one head"
    return head


def _state(connection: Connection) -> SchemaState:
    current = MigrationContext.configure(connection).get_current_revision()
    tables = frozenset(inspect(connection).get_table_names())
    return SchemaState(current=current, head=head_revision(), tables=tables)


def state(engine: Engine) -> SchemaState:
    with engine.connect() as connection:
        return _state(connection)


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock (PostgreSQL)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
        yield connection


def _first_revision_tables() -> frozenset[str]:
    script = scripts().get_revision(FIRST_REVISION)
    assert script is not None
    return frozenset(script.module.TABLES)


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrades the schema to `revision`; returns the revisions before and after.

    A database made before migrations existed (0.1.0's tables, no revision) is recorded as
    revision 0001 first; any other database without a revision but with tables is refused.
    """
    with _migrating(engine) as connection:
        before = _state(connection)
        config = _config(connection)
        if before.current is None and not before.empty:
            missing = _first_revision_tables() - before.tables
            if missing:
                raise SchemaError(
                    "the database has tables but no schema revision, and lacks "
                    f"{', '.join(sorted(missing))}: it was not made by cloudassist"
                )
            command.stamp(config, FIRST_REVISION)
            log.info("database without a revision recorded as revision %s", FIRST_REVISION)
        if before.current is not None and scripts().get_revision(before.current) is None:
            raise SchemaError(_newer(before.current))
        command.upgrade(config, revision)
        after = _state(connection)
    return before.current, after.current


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
    if found.empty:
        upgrade(engine)
        log.info("created the database schema at revision %s", found.head)
        return state(engine)
    if found.current is not None and scripts().get_revision(found.current) is None:
        raise SchemaError(_newer(found.current))
    at = f"schema revision {found.current}" if found.current else "no schema revision"
    raise SchemaError(
        f"the database is at {at} and this server needs revision {found.head}: "
        "run `cloudassist-server migrate` (with the same --db or --data-dir) to upgrade it"
    )
