"""Alembic's environment: migrations run on the connection `server.store.schema` hands over."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from cloudassist.server.store import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes["connection"]
# The caller's transaction holds every migration of a run (on SQLite an explicit BEGIN
# IMMEDIATE): Alembic, finding the connection in a transaction, begins and commits nothing of
# its own, so a failure rolls back the whole run. A migration must not use
# `op.get_context().autocommit_block()`, which would commit the migrations before it.
assert connection.in_transaction(), "migrations run inside the caller's transaction"
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    # SQLite cannot ALTER most things: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
