from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The tests import `tests.support`; the project itself is installed into the venv.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import support


@pytest.fixture(scope="session", autouse=True)
def database_backend() -> Iterator[str]:
    """With CLOUDASSIST_TEST_DB=postgres, every server the tests start uses its own database
    on one real PostgreSQL server started for the session; otherwise SQLite files."""
    if os.environ.get("CLOUDASSIST_TEST_DB") != "postgres":
        yield "sqlite"
        return
    from tests.postgres import PostgresServer

    postgres = PostgresServer()
    postgres.start()
    support.database_factory = postgres.new_database
    try:
        yield "postgres"
    finally:
        support.database_factory = None
        postgres.stop()
