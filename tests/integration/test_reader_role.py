"""A login granted `ims_reader` can SELECT the SQL surface and do nothing else."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from syncer.store.migrate import READER_ROLE, REPORTING_FUNCTIONS, REPORTING_VIEWS, SURFACE
from tests.conftest import PgServer

pytestmark = pytest.mark.no_replay_check("a hand-made event without its image row")


@pytest.fixture
async def reporter_dsn(pg_server: PgServer, db: str) -> str:
    name = f"reporter_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE ims_reader")
    finally:
        await conn.close()
    owner = await asyncpg.connect(db)
    try:
        await owner.execute(
            "INSERT INTO ims.image_events (region, image_id, kind, new_status) VALUES ('r', 'i', 'created', 'active')"
        )
        database = await owner.fetchval("SELECT current_database()")
    finally:
        await owner.close()
    return pg_server.dsn(user=name, database=database)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO ims.image_events (region, image_id, kind) VALUES ('r', 'x', 'created')",
        "UPDATE ims.sync_runs SET error = 'x'",
        "DELETE FROM ims.image_events",
        "INSERT INTO ims.image_rows (region, image_id, image_type, raw, content_hash) VALUES ('r','x','gold','{}','')",
        "SELECT * FROM ims.image_rows",
        "SELECT * FROM ims.partitions",
        "SELECT * FROM ims.feed_meta",
        "INSERT INTO ims.feed_consumers (name, cursor, seq) VALUES ('x', 'c', 0)",
        "CREATE TABLE ims.mine (x int)",
        "DROP VIEW ims.current_images",
        "ALTER TABLE ims.image_events ADD COLUMN x int",
        "TRUNCATE ims.image_events",
        "DROP VIEW ims.killed_images",
        "CREATE OR REPLACE VIEW ims.live_image_counts AS SELECT 1 AS images",
        "DROP FUNCTION ims.stuck_images(interval)",
        "CREATE FUNCTION ims.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "COMMENT ON VIEW ims.partition_freshness IS 'x'",
    ],
)
async def test_reader_cannot_write_or_alter(reporter_dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(reporter_dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_reader_can_select_the_surface(reporter_dsn: str) -> None:
    conn = await asyncpg.connect(reporter_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM ims.image_events") == 1
        for view in (
            "ims.images",
            "ims.current_images",
            "ims.sync_runs",
            "ims.feed_consumers",
            *REPORTING_VIEWS,
        ):
            expected = 1 if view == "ims.status_transitions_daily" else 0  # the event above
            assert await conn.fetchval(f"SELECT count(*) FROM {view}") == expected, view
        assert await conn.fetchval("SELECT count(*) FROM ims.stuck_images()") == 0
        assert await conn.fetchval("SELECT count(*) FROM ims.stuck_images('1 second')") == 0
    finally:
        await conn.close()


async def test_reader_privileges_are_exactly_the_surface(db: str) -> None:
    """SELECT on the surface and the reporting views, EXECUTE on the reporting functions; no
    other table, view or sequence of ims, no other function, and nothing but SELECT."""
    conn = await asyncpg.connect(db)
    try:
        readable = await conn.fetch(
            "SELECT c.oid::regclass::text AS name, "
            "  has_table_privilege($1, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, "
            "TRIGGER') AS writes "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'ims' AND c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f') "
            "  AND has_table_privilege($1, c.oid, 'SELECT')",
            READER_ROLE,
        )
        assert {r["name"] for r in readable} == {*SURFACE, *REPORTING_VIEWS}
        assert not any(r["writes"] for r in readable)
        executable = await conn.fetch(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'ims' AND has_function_privilege($1, p.oid, 'EXECUTE')",
            READER_ROLE,
        )
        # the trigger functions are PUBLIC by default but useless to a reader (they run only
        # as triggers, on tables it cannot write); the reporting ones are granted explicitly
        assert set(REPORTING_FUNCTIONS) <= {r[0] for r in executable}
        public = await conn.fetch(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'ims' AND p.prorettype <> 'trigger'::regtype "
            "  AND has_function_privilege('public', p.oid, 'EXECUTE')"
        )
        assert public == []
    finally:
        await conn.close()
