"""Read-side queries for `syncer status` and the schema check at start-up."""

from __future__ import annotations

from typing import Any

import asyncpg

from syncer.errors import DatabaseError
from syncer.store.migrate import SCHEMA_REVISION, revision_order, schema_revision
from syncer.store.queries import sql


async def ensure_schema(pool: asyncpg.Pool) -> None:
    """Refuse to run against a schema other than this code's, saying which way it is off."""
    have = await schema_revision(pool)
    want = SCHEMA_REVISION
    if have == want:
        return
    if have is None:
        raise DatabaseError("database schema not migrated: run `syncer migrate` first")
    have_n, want_n = revision_order(have), revision_order(want)
    if have_n is not None and want_n is not None and have_n < want_n:
        raise DatabaseError(
            f"database schema at revision {have} is older than this code's {want}: "
            "run `syncer migrate`"
        )
    raise DatabaseError(
        f"database schema at revision {have} is newer than this code's {want}: upgrade syncer"
    )


async def partition_status(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(sql("partition_status"))]


async def recent_runs(pool: asyncpg.Pool, limit: int = 10) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(sql("recent_runs"), limit)]
