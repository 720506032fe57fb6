"""A login granted `ims_reader` can SELECT the SQL surface and do nothing else."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.conftest import PgServer


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
        for view in ("ims.images", "ims.current_images", "ims.sync_runs", "ims.feed_consumers"):
            assert await conn.fetchval(f"SELECT count(*) FROM {view}") == 0
    finally:
        await conn.close()
