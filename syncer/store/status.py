"""Read-side queries for `syncer status` and the schema check at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


async def full_sweep_ages(pool: asyncpg.Pool) -> dict[tuple[str, str], tuple[datetime, float]]:
    """(region, image type) → (start of its last complete full sweep, seconds since)."""
    return {
        (r["region"], r["image_type"]): (r["last_full_sweep_at"], r["age"])
        for r in await pool.fetch(sql("full_sweep_ages"))
        if r["last_full_sweep_at"] is not None
    }


async def recent_runs(pool: asyncpg.Pool, limit: int = 10) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(sql("recent_runs"), limit)]


@dataclass(frozen=True)
class RunRecord:
    """One row of ims.sync_runs, as `syncer status` shows it."""

    id: int
    mode: str
    outcome: str
    started_at: datetime
    finished_at: datetime | None
    pages: int
    images_seen: int
    created: int
    updated: int
    deleted: int
    error: str | None
    worker: str
    note: str | None

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class PartitionRecord:
    """A partition as the database knows it: its sweep record and its last passes."""

    region: str
    image_type: str
    live: int
    last_full_sweep_at: datetime | None  # start of the last COMPLETE full sweep
    last_delta_at: datetime | None
    watermark: datetime | None
    note: str | None
    last_full: RunRecord | None  # the last finished full pass (ok or failed)
    last_delta: RunRecord | None
    running: RunRecord | None

    @property
    def last_pass(self) -> RunRecord | None:
        """The newer of the last finished full and delta passes."""
        runs = [r for r in (self.last_full, self.last_delta) if r is not None]
        return max(runs, key=lambda r: (r.started_at, r.id)) if runs else None


async def partition_records(pool: asyncpg.Pool) -> list[PartitionRecord]:
    """Every partition in the database, with its last full, delta and running pass."""
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        parts = await conn.fetch(sql("status_partitions"))
        runs = await conn.fetch(sql("status_runs"))
    slots: dict[tuple[str, str, str], RunRecord] = {}
    for r in runs:
        slots[(r["region"], r["image_type"], r["slot"])] = RunRecord(
            id=r["id"],
            mode=r["mode"],
            outcome=r["outcome"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
            pages=r["pages"],
            images_seen=r["images_seen"],
            created=r["created"],
            updated=r["updated"],
            deleted=r["deleted"],
            error=r["error"],
            worker=r["worker"],
            note=r["note"],
        )
    return [
        PartitionRecord(
            region=p["region"],
            image_type=p["image_type"],
            live=p["live"],
            last_full_sweep_at=p["last_full_sweep_at"],
            last_delta_at=p["last_delta_at"],
            watermark=p["watermark"],
            note=p["note"],
            last_full=slots.get((p["region"], p["image_type"], "full")),
            last_delta=slots.get((p["region"], p["image_type"], "delta")),
            running=slots.get((p["region"], p["image_type"], "running")),
        )
        for p in parts
    ]
