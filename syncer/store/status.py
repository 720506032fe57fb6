"""Read-side queries for `syncer status` and the schema check at start-up."""

from __future__ import annotations

from typing import Any

import asyncpg

from syncer.errors import DatabaseError
from syncer.store.migrate import SCHEMA_REVISION, schema_revision
from syncer.store.queries import sql


async def ensure_schema(pool: asyncpg.Pool) -> None:
    """Refuse to run against a database that `syncer migrate` has not brought up to date."""
    have = await schema_revision(pool)
    want = SCHEMA_REVISION
    if have != want:
        state = "not migrated" if have is None else f"at revision {have}, code expects {want}"
        raise DatabaseError(f"database schema {state}: run `syncer migrate` first")


async def partition_status(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(sql("partition_status"))]


async def recent_runs(pool: asyncpg.Pool, limit: int = 10) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(sql("recent_runs"), limit)]
