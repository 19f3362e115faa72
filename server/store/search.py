"""Text search in SQL: a case-insensitive substring match that means the same on SQLite and
PostgreSQL.

Both sides are lowered: the pattern in Python, the column in SQL. SQLite's own lower() and LIKE
fold only A-Z, so on SQLite the column is lowered by Python's str.lower (registered on every
connection as `unicode_lower`). PostgreSQL's lower() folds by the database's LC_CTYPE, which
under the C locale is A-Z only: where the server has ICU, the column is lowered under ICU's
root collation instead, whatever the database's locale. `%`, `_` and the escape character in
the text are matched as themselves.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import BindParameter, Dialect, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

SQLITE_LOWER = "unicode_lower"
# PostgreSQL's ICU root collation: lower() under it folds every script.
ICU_COLLATION = "und-x-icu"
# Set on a PostgreSQL dialect when its server has ICU_COLLATION.
_FOLD_COLLATION = "cloudassist_fold_collation"


class _Lowered(FunctionElement[str]):
    """lower(x), with every letter folded on SQLite too."""

    type = String()
    name = "lowered"
    inherit_cache = True


@compiles(_Lowered)
def _lower(element: _Lowered, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(_Lowered, "postgresql")
def _postgres_lower(element: _Lowered, compiler: SQLCompiler, **kw: Any) -> str:
    argument = compiler.process(element.clauses, **kw)
    collation = getattr(compiler.dialect, _FOLD_COLLATION, None)
    return f'lower({argument} COLLATE "{collation}")' if collation else f"lower({argument})"


@compiles(_Lowered, "sqlite")
def _sqlite_lower(element: _Lowered, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{SQLITE_LOWER}({compiler.process(element.clauses, **kw)})"


def _python_lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


def register_sqlite_functions(connection: sqlite3.Connection) -> None:
    """Adds `unicode_lower` to a SQLite connection (on connect)."""
    connection.create_function(SQLITE_LOWER, 1, _python_lower, deterministic=True)


def detect_postgres_folding(dialect: Dialect, dbapi_connection: Any) -> None:
    """Notes on `dialect` whether its server has ICU (on the engine's first connection)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT count(*) FROM pg_collation WHERE collname = %s", (ICU_COLLATION,))
        found = cursor.fetchone()[0] > 0
    finally:
        cursor.close()
        dbapi_connection.rollback()
    setattr(dialect, _FOLD_COLLATION, ICU_COLLATION if found else None)


def contains_text(column: ColumnElement[str], text: str) -> ColumnElement[bool]:
    """`column` contains `text`, ignoring case; `%` and `_` are not wildcards."""
    return _Lowered(column).contains(text.lower(), autoescape=True)


# The escape character of contains_param's patterns: the one `autoescape=True` uses.
_ESCAPE = "/"


def contains_param(column: ColumnElement[str], param: BindParameter[str]) -> ColumnElement[bool]:
    """`contains_text` with the text as a bound parameter, for statements built once: the same
    SQL, to be given `contains_value(text)`."""
    return _Lowered(column).contains(param, escape=_ESCAPE)


def contains_value(text: str) -> str:
    """The value of a `contains_param` parameter: `text` lowered, its `%`, `_` and escape
    characters escaped (what `autoescape=True` does to a literal)."""
    escaped = text.lower().replace(_ESCAPE, _ESCAPE + _ESCAPE)
    return escaped.replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
