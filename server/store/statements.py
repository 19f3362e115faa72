"""Helpers for statements built once and executed with parameters.

Building a statement (its values coerced, its cache key computed) costs more than SQLite takes
to run a small one, so the hot reads build theirs once per shape of their filters. An
expanding `IN` parameter is rendered again into the SQL at every execution: the lists the
reads pass are short (a page of ids), so they use statements with one parameter per element
instead, built once per length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from sqlalchemy import BindParameter, Connection, FromClause, Select, bindparam, func, select
from sqlalchemy.sql.elements import ColumnElement

from cloudassist.server.domain.pagination import Page

# A listing's statements: the count of what its filters match, and its rows.
Count: TypeAlias = Select[int]
Rows: TypeAlias = Select[*tuple[Any, ...]]

# A page's rows: one more than the page holds, to know whether there is a next one.
PAGE_LIMIT: BindParameter[int] = bindparam("p_limit")

# The longest list given one parameter per element; longer ones expand at execution.
MAX_FIXED_IN = 128


def in_list(column: ColumnElement[Any], name: str, count: int) -> ColumnElement[bool]:
    """`column IN (:name_0, ..., :name_<count-1>)`, or an expanding `:name` past
    MAX_FIXED_IN; its values are `in_values(name, values)`."""
    if count > MAX_FIXED_IN:
        return column.in_(bindparam(name, expanding=True))
    return column.in_([bindparam(f"{name}_{i}") for i in range(count)])


def in_values(name: str, values: Sequence[object]) -> dict[str, object]:
    """The parameters of `in_list(column, name, len(values))`."""
    if len(values) > MAX_FIXED_IN:
        return {name: list(values)}
    return {f"{name}_{i}": value for i, value in enumerate(values)}


def page_total(
    conn: Connection,
    count: Count,
    params: Mapping[str, object],
    page: Page,
    fetched: int,
) -> int:
    """How many rows the listing's filters match, `fetched` being how many its page read (one
    more than a page when there is a next one). A first page that holds them all already says
    how many there are: the count is run only when it does not."""
    if page.after_id is None and fetched <= page.size:
        return fetched
    total: int = conn.execute(count, params).scalar_one()
    return total


def counted_page(
    counted: FromClause,
    key: ColumnElement[str],
    conditions: Sequence[ColumnElement[bool]],
    after: bool,
    rows: Rows,
) -> tuple[Count, Rows]:
    """A listing's two statements: the count of the rows of `counted` that `conditions`
    match, and `rows` filtered by them, newest `key` first, `p_limit` of them, after the
    previous page's last id (`p_after_id`) when `after`."""
    total = select(func.count()).select_from(counted).where(*conditions)
    if after:
        conditions = [*conditions, key < bindparam("p_after_id")]
    return total, rows.where(*conditions).order_by(key.desc()).limit(PAGE_LIMIT)
