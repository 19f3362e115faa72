"""Engine creation: SQLite tuned for one writer and many readers (WAL), or PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _tune_sqlite(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class DatabasePathError(Exception):
    """A SQLite database's file or directory that the OS refuses: its path and the reason."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(f"cannot use the database at {path}: {error}")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database."""
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


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
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
