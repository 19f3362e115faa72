"""Alembic migrations of the server's schema: `versions/` holds one file per revision."""
