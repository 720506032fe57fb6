"""Migrations with replicas: concurrent migrations take turns; a schema older or newer than the
code is refused at start-up with a one-line reason saying which."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from syncer.errors import DatabaseError, MigrationError
from syncer.store.migrate import (
    MIGRATION_LOCK,
    SCHEMA_REVISION,
    alembic_config,
    migrate,
    revision_order,
)
from syncer.store.pool import open_pool
from syncer.store.status import ensure_schema


async def test_two_concurrent_migrations_of_an_empty_database_both_succeed(
    empty_db: str,
) -> None:
    first, second = await asyncio.gather(migrate(empty_db), migrate(empty_db))
    assert first.after == second.after == SCHEMA_REVISION
    assert {first.before, second.before} == {None, SCHEMA_REVISION}  # one after the other


async def test_a_migration_waits_for_the_one_holding_the_lock(
    empty_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    holder = await asyncpg.connect(empty_db)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1, $2)", *MIGRATION_LOCK)
        caplog.set_level(logging.WARNING, logger="syncer.store.migrate")
        waiting = asyncio.create_task(migrate(empty_db))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        assert "another syncer migration is running" in caplog.text
        await holder.execute("SELECT pg_advisory_unlock($1, $2)", *MIGRATION_LOCK)
        result = await asyncio.wait_for(waiting, 60)
        assert (result.before, result.after) == (None, SCHEMA_REVISION)

        # and a wait is bounded
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1, $2)", *MIGRATION_LOCK)
        with pytest.raises(MigrationError, match=r"held its lock for more than 0\.3s"):
            await migrate(empty_db, lock_timeout=0.3)
    finally:
        await holder.close()


async def test_a_schema_older_than_the_code_is_refused(empty_db: str) -> None:
    await migrate(empty_db, revision="0001")
    pool = await open_pool(empty_db, size=2)
    try:
        with pytest.raises(DatabaseError) as raised:
            await ensure_schema(pool)
    finally:
        await pool.close()
    assert str(raised.value) == (
        f"database schema at revision 0001 is older than this code's {SCHEMA_REVISION}: "
        "run `syncer migrate`"
    )


async def test_a_schema_newer_than_the_code_is_refused(db: str) -> None:
    newer = f"{int(SCHEMA_REVISION) + 1:04d}"
    pool = await open_pool(db, size=2)
    try:
        await pool.execute("UPDATE public.alembic_version SET version_num = $1", newer)
        with pytest.raises(DatabaseError) as raised:
            await ensure_schema(pool)
    finally:
        await pool.close()
    assert str(raised.value) == (
        f"database schema at revision {newer} is newer than this code's {SCHEMA_REVISION}: "
        "upgrade syncer"
    )


def test_revisions_are_numbered_in_order() -> None:
    """ensure_schema tells older from newer by the revision numbers: keep them so."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config("postgresql://unused/unused"))
    chain = [s.revision for s in reversed(list(scripts.walk_revisions()))]
    orders = [revision_order(r) for r in chain]
    assert None not in orders, chain
    assert orders == sorted(orders) and len(set(orders)) == len(orders), chain
    assert chain[-1] == SCHEMA_REVISION
