"""A login granted `ims_reader` can SELECT the SQL surface and do nothing else."""

from __future__ import annotations

import re
import uuid

import asyncpg
import pytest

from syncer.store.migrate import (
    READER_ROLE,
    REPORTING_FUNCTIONS,
    REPORTING_VIEWS,
    SURFACE,
    grant_sql,
)
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


# ---- every object of the schema, after every migration ---------------------------------------

RELATION_KINDS = {"r": "table", "p": "table", "v": "view", "m": "view", "S": "sequence"}


def granted() -> tuple[set[str], set[str]]:
    """What `syncer migrate` grants the reader: relations it may SELECT, functions it may run
    (read from the grants themselves, so that objects other branches add are covered)."""
    relations: set[str] = set()
    functions: set[str] = set()
    for statement in grant_sql():
        if m := re.fullmatch(r"GRANT SELECT ON (\S+) TO \w+", statement):
            relations.add(m[1])
        elif m := re.fullmatch(r"GRANT EXECUTE ON FUNCTION (.+) TO \w+", statement):
            functions.add(m[1])
        else:
            assert statement == f"GRANT USAGE ON SCHEMA ims TO {READER_ROLE}", statement
    return relations, functions


async def relations_of_the_app(db: str) -> dict[str, tuple[str, str]]:
    """name → (kind, first column) of every relation in ims, and public.alembic_version."""
    owner = await asyncpg.connect(db)
    try:
        rows = await owner.fetch(
            "SELECT n.nspname || '.' || c.relname AS name, c.relkind::text AS kind,"
            " (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
            "  AND NOT a.attisdropped ORDER BY a.attnum LIMIT 1) AS col"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE (n.nspname = 'ims' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f'))"
            "  OR c.oid = 'public.alembic_version'::regclass"
        )
    finally:
        await owner.close()
    return {r["name"]: (RELATION_KINDS[r["kind"]], r["col"]) for r in rows}


async def refused(conn: asyncpg.Connection, statement: str) -> bool:
    """True when PostgreSQL refuses ``statement`` for want of a privilege (or, for a write to a
    view made of joins, because it is not updatable at all); any other error is a bad test."""
    try:
        await conn.execute(statement)
    except asyncpg.InsufficientPrivilegeError:
        return True
    except asyncpg.ObjectNotInPrerequisiteStateError as e:
        return "not automatically updatable" in (e.detail or "")
    return False


async def test_reader_selects_exactly_the_granted_surface(reporter_dsn: str, db: str) -> None:
    """SELECT works on what migrate grants — the contract's surface and what other parts add —
    and is refused on every other relation of the schema (tables behind the views, leases,
    replicas, feed_meta, sequences) and on alembic_version."""
    relations = await relations_of_the_app(db)
    surface, _ = granted()
    assert set(SURFACE) <= surface <= set(relations), surface - set(relations)
    assert {"ims.image_rows", "ims.partitions", "ims.partition_leases", "ims.replicas",
            "ims.feed_meta", "public.alembic_version"} <= set(relations) - surface  # fmt: skip
    conn = await asyncpg.connect(reporter_dsn)
    try:
        readable = set()
        for name in relations:
            if not await refused(conn, f"SELECT * FROM {name} LIMIT 1"):
                readable.add(name)
    finally:
        await conn.close()
    assert readable == surface


async def test_reader_writes_locks_and_alters_nothing(reporter_dsn: str, db: str) -> None:
    """On every relation: no INSERT, UPDATE, DELETE, TRUNCATE, row lock, table lock that would
    hold writers back, nextval/setval, ALTER, DROP, COMMENT; no CREATE in any schema."""
    relations = await relations_of_the_app(db)
    statements = [
        "CREATE TABLE ims.mine (x int)",
        "CREATE TABLE public.mine (x int)",
        "CREATE SCHEMA mine",
        "CREATE FUNCTION ims.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE VIEW ims.mine AS SELECT 1 AS x",
    ]
    for name, (kind, col) in relations.items():
        if kind == "sequence":
            statements += [f"SELECT nextval('{name}')", f"SELECT setval('{name}', 1)"]
        else:
            statements += [
                f"INSERT INTO {name} DEFAULT VALUES",
                f"UPDATE {name} SET {col} = DEFAULT",
                f"DELETE FROM {name}",
                f"SELECT 1 FROM {name} FOR UPDATE",
                f"SELECT 1 FROM {name} FOR KEY SHARE",
                f"BEGIN; LOCK TABLE {name} IN SHARE MODE; COMMIT",
            ]
            if kind == "table":
                statements.append(f"TRUNCATE {name}")
        statements += [
            f"ALTER {kind.upper()} {name} OWNER TO CURRENT_USER",
            f"ALTER {kind.upper()} {name} RENAME TO mine",
            f"DROP {kind.upper()} {name}",
            f"COMMENT ON {kind.upper()} {name} IS 'x'",
        ]
    conn = await asyncpg.connect(reporter_dsn)
    try:
        allowed = []
        for statement in statements:
            if not await refused(conn, statement):
                allowed.append(statement)
            if conn.is_in_transaction():
                await conn.execute("ROLLBACK")
    finally:
        await conn.close()
    assert allowed == []


async def test_reader_can_run_no_function_that_writes(reporter_dsn: str, db: str) -> None:
    """Of the schema's functions the reader may call only the granted ones, none of them
    SECURITY DEFINER nor volatile (PostgreSQL refuses writes in a stable function); the trigger
    functions, executable by PUBLIC as every function is, run only as triggers."""
    _, functions = granted()
    owner = await asyncpg.connect(db)
    try:
        rows = await owner.fetch(
            "SELECT p.oid::regprocedure::text AS name, p.prosecdef AS definer,"
            " p.provolatile::text AS volatility, p.prorettype = 'trigger'::regtype AS trigger,"
            " has_function_privilege($1, p.oid, 'EXECUTE') AS executable"
            " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'ims'",
            READER_ROLE,
        )
    finally:
        await owner.close()
    assert functions <= {r["name"] for r in rows}
    triggers = []
    for r in rows:
        if r["trigger"]:
            triggers.append(r["name"])
            continue
        assert r["executable"] == (r["name"] in functions), r["name"]
        if r["executable"]:
            assert not r["definer"] and r["volatility"] in ("s", "i"), dict(r)
    assert triggers, "the schema's trigger functions are checked below"
    conn = await asyncpg.connect(reporter_dsn)
    try:
        for name in triggers:
            with pytest.raises(asyncpg.FeatureNotSupportedError, match="only be called as trig"):
                await conn.execute(f"SELECT {name.removesuffix('()')}()")
    finally:
        await conn.close()
