"""Helpers for raw-SQL revisions."""

from __future__ import annotations

from alembic import op
from sqlalchemy.util import await_only


def run_sql(script: str) -> None:
    """Run a multi-statement SQL script on the migration's connection, inside its transaction.

    asyncpg's simple-query path accepts several statements (and dollar-quoted function bodies)
    at once, which SQLAlchemy's prepared-statement path does not.
    """
    driver_connection = op.get_bind().connection.driver_connection
    await_only(driver_connection.execute(script))
