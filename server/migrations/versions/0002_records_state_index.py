"""An index on records.state: the metrics count records by state on every scrape.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_records_state", "records", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_records_state", table_name="records")
