"""Alembic environment: runs revisions over asyncpg (through SQLAlchemy's async engine).

Revisions are raw SQL. ``syncer.store.migrate`` builds the alembic Config programmatically and
passes the DSN as ``sqlalchemy.url``; nothing here reads a file or the environment.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

config = context.config


def _do_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        version_table="alembic_version",
        version_table_schema="public",
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_do_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
