"""Fixtures shared by the unit tests of the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.unit.tenancy import new_engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite database in the test's temporary directory."""
    engine = new_engine(tmp_path)
    yield engine
    engine.dispose()
