"""Engine creation: SQLite tuned for one writer and many readers (WAL), or PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from cloudassist.server.store.search import detect_postgres_folding, register_sqlite_functions


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# How long a new connection keeps trying to switch a new file to WAL while another holds it.
WAL_SWITCH_SECONDS = 10.0


def _use_wal(cursor: sqlite3.Cursor) -> None:
    """WAL mode. Switching a new file to it needs the exclusive lock, and SQLite refuses at once
    (no busy wait: it would deadlock) while another connection holds a write lock on it, as
    when servers start together on a new database: this tries again until it is free."""
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # a database thread's connect, never the event loop


def _tune_sqlite(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    register_sqlite_functions(dbapi_connection)


class DatabasePathError(Exception):
    """A SQLite database's file or directory that the OS refuses: its path and the reason."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(f"cannot use the database at {path}: {error}")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database."""
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def absolute_database_url(url: str) -> str:
    """`url` with a relative SQLite file made absolute against the current directory; any
    other URL (PostgreSQL, in memory, a SQLite `file:` URI) as it is."""
    try:
        parsed = make_url(url)
    except ArgumentError:  # not a URL: opening it says so, as for any URL it cannot use
        return url
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return url
    if database.startswith("file:") or Path(database).is_absolute():
        return url
    return parsed.set(database=str(Path(database).absolute())).render_as_string(hide_password=False)


def missing_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL when there is none (None: it exists, or is in memory)."""
    path = sqlite_path(url) if is_sqlite(url) else None
    if path is None:
        return None
    try:
        return None if path.exists() else path
    except OSError as error:  # a name too long, a directory it may not search
        raise DatabasePathError(path, error) from error


# What opening a database raises for a URL that is malformed, names a driver that is not
# installed, or reaches nothing: the operator's to fix, so a line and not a traceback. (The
# server leaves ImportError out: there it may be about something else, like boto3.)
DATABASE_ERRORS = (SQLAlchemyError, ImportError)


def database_error(error: BaseException) -> str:
    """A one-line message of what opening a database raised."""
    # SQLAlchemy appends the statement and a link on lines of their own.
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"cannot use the database: {first}"


def make_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file's directory is created when missing (or raises
    DatabasePathError)."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DatabasePathError(path, error) from error
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            pool_size=8,
            max_overflow=8,
        )
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
    if engine.dialect.name == "postgresql":
        event.listen(
            engine,
            "first_connect",
            lambda connection, _record: detect_postgres_folding(engine.dialect, connection),
        )
    return engine
