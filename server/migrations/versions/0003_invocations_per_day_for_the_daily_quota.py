"""Invocations per account, region and day: the daily quota reads one row instead of counting
the day's invocations. A day's row is made, from a count of that day's invocations, by its
first invocation, so an upgrade needs no data moved.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invocation_days",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("region_id", sa.String(length=64), nullable=False),
        sa.Column("day_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("invocations", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "region_id", "day_start_ms"),
    )


def downgrade() -> None:
    op.drop_table("invocation_days")
