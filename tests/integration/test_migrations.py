"""`syncer migrate`: creates the contract's objects, is idempotent, goes down and up again."""

from __future__ import annotations

import asyncpg
import pytest

from syncer.store.migrate import SCHEMA_REVISION, downgrade, head_revision, migrate

CONTRACT_IMAGES_COLUMNS = {
    "region": "text",
    "image_id": "text",
    "image_type": "text",
    "name": "text",
    "status": "text",
    "visibility": "text",
    "owner": "text",
    "os_type": "text",
    "platform": "text",
    "os_version": "text",
    "os_bit": "text",
    "disk_format": "text",
    "container_format": "text",
    "min_ram": "integer",
    "min_disk": "integer",
    "size": "bigint",
    "image_size": "bigint",
    "virtual_env_type": "text",
    "protected": "boolean",
    "tags": "ARRAY",
    "enterprise_project_id": "text",
    "created_at": "timestamp with time zone",
    "updated_at": "timestamp with time zone",
    "active_at": "timestamp with time zone",
    "raw": "jsonb",
    "first_seen_at": "timestamp with time zone",
    "last_seen_at": "timestamp with time zone",
    "deleted_at": "timestamp with time zone",
}
CONTRACT_EVENTS_COLUMNS = {
    "seq": "bigint",
    "event_id": "uuid",
    "occurred_at": "timestamp with time zone",
    "region": "text",
    "image_id": "text",
    "kind": "text",
    "old_status": "text",
    "new_status": "text",
    "changes": "jsonb",
    "sync_run_id": "bigint",
}
CONTRACT_RUNS_COLUMNS = {
    "id": "bigint",
    "region": "text",
    "image_type": "text",
    "mode": "text",
    "started_at": "timestamp with time zone",
    "finished_at": "timestamp with time zone",
    "outcome": "text",
    "pages": "integer",
    "images_seen": "integer",
    "created": "integer",
    "updated": "integer",
    "deleted": "integer",
    "error": "text",
    "worker": "text",
}


async def columns(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'ims' AND table_name = $1",
        table,
    )
    return {r["column_name"]: r["data_type"] for r in rows}


async def schema_fingerprint(conn: asyncpg.Connection) -> list[tuple[str, ...]]:
    rows = await conn.fetch(
        """
        SELECT 'rel', c.relname, c.relkind::text, '' FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'ims'
        UNION ALL
        SELECT 'col', table_name, column_name, data_type FROM information_schema.columns
          WHERE table_schema = 'ims'
        UNION ALL
        SELECT 'idx', indexname, indexdef, '' FROM pg_indexes WHERE schemaname = 'ims'
        UNION ALL
        SELECT 'trg', tgname, tgrelid::regclass::text, '' FROM pg_trigger
          WHERE tgrelid::regclass::text LIKE 'ims.%' AND NOT tgisinternal
        UNION ALL
        SELECT 'fn', p.oid::regprocedure::text, md5(p.prosrc), coalesce(p.proacl::text, '')
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'ims'
        UNION ALL
        SELECT 'view', c.relname, md5(pg_get_viewdef(c.oid)), coalesce(c.relacl::text, '')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'ims' AND c.relkind = 'v'
        ORDER BY 1, 2, 3, 4
        """
    )
    return [tuple(r) for r in rows]


async def test_migrate_creates_contract_objects(empty_db: str) -> None:
    result = await migrate(empty_db)
    assert result.before is None and result.after == SCHEMA_REVISION
    conn = await asyncpg.connect(empty_db)
    try:
        assert await columns(conn, "images") == CONTRACT_IMAGES_COLUMNS | {"version": "bigint"}
        assert set(await columns(conn, "current_images")) == set(CONTRACT_IMAGES_COLUMNS) | {
            "version"
        }
        assert await columns(conn, "image_events") == CONTRACT_EVENTS_COLUMNS
        assert CONTRACT_RUNS_COLUMNS.items() <= (await columns(conn, "sync_runs")).items()
        kinds = dict(
            await conn.fetch(
                "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'ims' AND c.relname = ANY($1)",
                ["images", "current_images", "image_events", "sync_runs"],
            )
        )
        assert kinds == {
            "images": "v",
            "current_images": "v",
            "image_events": "r",
            "sync_runs": "r",
        }
        assert await conn.fetchval("SELECT current_user") == "syncer_owner"
    finally:
        await conn.close()


async def test_second_migrate_changes_nothing(empty_db: str) -> None:
    await migrate(empty_db)
    conn = await asyncpg.connect(empty_db)
    try:
        before = await schema_fingerprint(conn)
        result = await migrate(empty_db)
        assert (result.before, result.after) == (SCHEMA_REVISION, SCHEMA_REVISION)
        assert await schema_fingerprint(conn) == before
    finally:
        await conn.close()


async def test_up_down_up(empty_db: str) -> None:
    await migrate(empty_db)
    conn = await asyncpg.connect(empty_db)
    try:
        migrated = await schema_fingerprint(conn)
        assert migrated
        assert await downgrade(empty_db, "base") is None
        assert await schema_fingerprint(conn) == []
        await migrate(empty_db)
        assert await schema_fingerprint(conn) == migrated
    finally:
        await conn.close()


async def test_missing_reader_role_is_reported_with_sql(empty_db: str) -> None:
    """The owner may not create roles: migrate succeeds and hands back the administrator's SQL."""
    result = await migrate(empty_db, reader_role="ims_reader_not_created")
    assert result.after == SCHEMA_REVISION
    assert result.reader_role == "missing"
    assert result.admin_sql is not None
    assert "CREATE ROLE ims_reader_not_created NOLOGIN" in result.admin_sql
    assert "GRANT SELECT ON ims.image_events TO ims_reader_not_created" in result.admin_sql


async def test_code_expects_the_newest_revision(empty_db: str) -> None:
    """The start-up check's constant follows the alembic scripts (add a revision, bump it)."""
    assert head_revision() == SCHEMA_REVISION
    result = await migrate(empty_db)
    assert result.after == SCHEMA_REVISION


async def test_every_view_and_function_says_what_it_holds(db: str) -> None:
    """Reporting tools show these comments next to the names (COMMENT ON VIEW / FUNCTION)."""
    conn = await asyncpg.connect(db)
    try:
        silent = await conn.fetch(
            """
            SELECT c.oid::regclass::text FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'ims' AND c.relkind = 'v'
                AND coalesce(obj_description(c.oid, 'pg_class'), '') = ''
            UNION ALL
            SELECT p.oid::regprocedure::text FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'ims' AND p.prorettype <> 'trigger'::regtype
                AND coalesce(obj_description(p.oid, 'pg_proc'), '') = ''
            """
        )
        assert [r[0] for r in silent] == []
    finally:
        await conn.close()


async def test_feed_identity_is_one_row_and_differs_per_database(empty_db: str, db: str) -> None:
    """Each migrated database gets its own epoch: cursors tell databases apart by it."""
    await migrate(empty_db)
    epochs = []
    for dsn in (empty_db, db):
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT epoch, pruned_through FROM ims.feed_meta")
            assert len(rows) == 1 and rows[0]["pruned_through"] == 0
            epochs.append(rows[0]["epoch"])
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute("INSERT INTO ims.feed_meta DEFAULT VALUES")
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(
                    "INSERT INTO ims.feed_consumers (name, cursor, seq) VALUES ('bad name', '', 0)"
                )
        finally:
            await conn.close()
    assert epochs[0] != epochs[1]
