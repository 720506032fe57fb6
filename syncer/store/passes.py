"""One partition pass against PostgreSQL: the lock, the sync_runs row, and the page writer.

A pass holds one connection for its whole life. On it:
- a session advisory lock on the partition, so at most one pass runs per partition across all
  replicas and both modes (the partial unique index on sync_runs backs this up); if the
  process dies, the connection closes and the lock goes with it, so whoever takes the lock next
  knows any ``running`` row left behind is an orphan and closes it as failed;
- temp tables for staging a page, the page's events, and the ids a full sweep saw.

Each page is ONE transaction: prefilter (what changed?), COPY of only the changed rows, one
set-based upsert, and the page's events appended LAST. The delta watermark moves only when a
pass COMPLETES, to a point its listing provably covered (see ``complete_full_sweep``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import asyncpg

from syncer.errors import DatabaseError, SyncerError
from syncer.records import COLUMNS, PageDigest
from syncer.store.pool import SESSION_ERRORS, describe_session_error
from syncer.store.queries import sql

log = logging.getLogger(__name__)

#: Images whose unfit values are logged one by one per pass (the rest are only counted).
UNFIT_LOGGED = 5

PARTITION_LOCK_CLASS = 7_140_202  # first key of pg_advisory_lock(int, int) for partitions
#: The transaction-level advisory lock that serializes event writers (the trigger of
#: migration 0001 takes it; a test keeps the two equal).
EVENT_LOCK_KEY = 7_140_201_001

Mode = Literal["full", "delta"]


class PartitionBusy(SyncerError):
    """Another pass (on this or another replica) holds the partition."""


@dataclass
class PassCounts:
    pages: int = 0
    images_seen: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    events: int = 0
    written: int = 0
    unfit: int = 0  # images with a value that did not fit its typed column
    by_kind: dict[str, int] = field(default_factory=dict)  # events per kind (for metrics)

    def add_kinds(self, kinds: Sequence[str]) -> None:
        for kind in kinds:
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            if kind in ("created", "restored"):
                self.created += 1
            elif kind in ("updated", "status_changed"):
                self.updated += 1
            elif kind == "deleted":
                self.deleted += 1
        self.events += len(kinds)


@dataclass(frozen=True)
class SweepVerdict:
    seen: int
    live: int
    tombstoned: int
    skipped_reason: str | None = None


@dataclass
class PartitionPass:
    conn: asyncpg.Connection
    region: str
    image_type: str
    mode: Mode
    run_id: int
    started_at: datetime
    watermark: datetime | None
    last_full_sweep_at: datetime | None
    counts: PassCounts = field(default_factory=PassCounts)
    note: str | None = None
    listed_deleted: int = 0  # images this pass saw listed with status "deleted"

    async def apply_page(self, page: PageDigest) -> PassCounts:
        """Apply one page: one round trip when nothing changed, else one write transaction.

        Images not known yet are COPied straight into ims.image_rows (the bulk of a first sync
        costs what a raw COPY costs); known images that changed go through the staged upsert.
        The events of the page are appended last, in the same transaction as its rows.
        """
        conn, counts = self.conn, self.counts
        args = (self.region, self.image_type, page.ids, page.hashes, self.mode == "full")
        if self.mode == "full" and page.oldest_created is not None:
            wanted = await conn.fetch(
                sql("page_prefilter_range"), *args, page.oldest_created, page.newest_created
            )
        else:
            wanted = await conn.fetch(sql("page_prefilter"), *args)
        if wanted:
            async with conn.transaction():
                await self._write(page, wanted)
        counts.pages += 1
        counts.images_seen += len(page.ids)
        self.listed_deleted += page.listed_deleted
        return counts

    def _note_unfit(self, unfit: dict[str, list[str]]) -> None:
        for image_id, keys in unfit.items():
            self.counts.unfit += 1
            if self.counts.unfit <= UNFIT_LOGGED:
                log.warning(
                    "image values that do not fit their columns stored as NULL (raw keeps them)",
                    extra={
                        "partition": f"{self.region}/{self.image_type}",
                        "run_id": self.run_id,
                        "image_id": image_id,
                        "fields": ",".join(keys),
                    },
                )

    async def _write(self, page: PageDigest, wanted: list[asyncpg.Record]) -> None:
        conn, counts = self.conn, self.counts
        unfit: dict[str, list[str]] = {}
        records = page.records([w["ord"] - 1 for w in wanted], unfit)
        fresh = [
            r
            for r, w in zip(records, wanted, strict=True)
            if not w["known"] and r.status != "deleted"
        ]
        staged = [
            r for r, w in zip(records, wanted, strict=True) if w["known"] or r.status == "deleted"
        ]
        kinds: list[str] = []
        if fresh:
            await conn.copy_records_to_table(
                "image_rows",
                schema_name="ims",
                columns=("region", "image_type", *COLUMNS),
                records=[(self.region, self.image_type, *r) for r in fresh],
            )
            await conn.execute(
                sql("stage_created_events"), [r.image_id for r in fresh], [r.status for r in fresh]
            )
            kinds += ["created"] * len(fresh)
        if staged:
            await conn.copy_records_to_table("sync_stage", records=staged, columns=COLUMNS)
            upserted = await conn.fetch(sql("page_upsert"), self.region, self.image_type)
            kinds += [r["kind"] for r in upserted]
        if kinds:
            await conn.execute(sql("append_events"), self.region, self.run_id)
        # counted once the transaction's statements are done (a rollback re-raises past here)
        counts.written += len(records)
        counts.add_kinds(kinds)
        if unfit:
            self._note_unfit(unfit)

    async def complete_full_sweep(
        self, *, missed_sweeps_to_delete: int, min_ratio: float, covered_from: datetime
    ) -> SweepVerdict:
        """The listing was COMPLETE: judge absences and move the delta watermark to
        ``covered_from`` (a moment before the listing began, in the API's clock). Only ever
        called after a complete sweep."""
        assert self.mode == "full"
        conn = self.conn
        row = await conn.fetchrow(sql("sweep_counts"), self.region, self.image_type)
        seen, live = int(row["seen"]), int(row["live"])
        if live and seen < min_ratio * live:
            reason = (
                f"tombstoned nothing: the sweep saw {seen} images but the partition holds {live} "
                f"live (below min_sweep_ratio {min_ratio:g})"
            )
            await conn.execute(
                sql("record_skipped_sweep"), self.region, self.image_type, reason, covered_from
            )
            self.note = reason
            return SweepVerdict(seen, live, 0, reason)
        # Every listed image is now a row of this partition, live unless it was listed as
        # deleted; the listing yields each id once. So the live rows the sweep did not see
        # number live - (seen - listed_deleted): when that is 0, the anti-join over the whole
        # partition would find nothing (the common case) and is skipped.
        unseen = live - (seen - self.listed_deleted)
        async with conn.transaction():
            kinds: list[str] = []
            if unseen > 0:
                await conn.execute(sql("prepare_mark_missed"))
                kinds = [
                    r["kind"]
                    for r in await conn.fetch(
                        sql("mark_missed"),
                        self.region,
                        self.image_type,
                        self.last_full_sweep_at,
                        missed_sweeps_to_delete,
                    )
                ]
            await conn.execute(
                sql("record_full_sweep"),
                self.region,
                self.image_type,
                self.started_at,
                self.run_id,
                covered_from,
            )
            if kinds:
                await conn.execute(sql("append_events"), self.region, self.run_id)
        self.counts.add_kinds(kinds)
        return SweepVerdict(seen, live, len(kinds))

    async def complete_delta(self, *, covered_from: datetime) -> None:
        """The delta listing was COMPLETE: the next one starts at ``covered_from``."""
        await self.conn.execute(
            sql("record_delta"), self.region, self.image_type, self.started_at, covered_from
        )


def _usable(conn: asyncpg.Connection) -> bool:
    """Open, and still ours (the pool takes back a connection whose server side died)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


async def _finish(
    conn: asyncpg.Connection | asyncpg.Pool, p: PartitionPass, outcome: str, error: str | None
) -> None:
    c = p.counts
    await conn.execute(
        sql("finish_run"),
        p.run_id,
        outcome,
        c.pages,
        c.images_seen,
        c.created,
        c.updated,
        c.deleted,
        error,
        p.note,
        c.unfit,
    )


@contextlib.asynccontextmanager
async def partition_pass(
    pool: asyncpg.Pool,
    region: str,
    image_type: str,
    mode: Mode,
    *,
    worker: str,
    acquire_timeout: float = 30.0,
) -> AsyncIterator[PartitionPass]:
    """Lock the partition, open its ``running`` row, and close it as ok/failed on the way out.

    Raises PartitionBusy when another pass holds the partition. An exception inside the block
    marks the run failed (with the exception's one-line text) and propagates.
    """
    try:
        conn: asyncpg.Connection = await pool.acquire(timeout=acquire_timeout)
    except TimeoutError as e:
        raise DatabaseError(
            f"partition {region}/{image_type}: no database connection free within "
            f"{acquire_timeout:g}s"
        ) from e
    except SESSION_ERRORS as e:
        raise DatabaseError(
            f"partition {region}/{image_type}: cannot get a database connection: "
            f"{describe_session_error(e)}"
        ) from e
    locked = False
    try:
        locked = await conn.fetchval(
            sql("try_lock_partition"), PARTITION_LOCK_CLASS, region, image_type
        )
        if not locked:
            raise PartitionBusy(f"partition {region}/{image_type}: another pass is running")
        await conn.execute(sql("create_work_tables"))
        async with conn.transaction():
            await conn.execute(sql("ensure_partition"), region, image_type)
            await conn.fetch(sql("close_orphaned_runs"), region, image_type)
            run = await conn.fetchrow(sql("start_run"), region, image_type, mode, worker)
        state = await conn.fetchrow(sql("partition_state"), region, image_type)
        p = PartitionPass(
            conn,
            region,
            image_type,
            mode,
            run["id"],
            run["started_at"],
            state["watermark"],
            state["last_full_sweep_at"],
        )
        try:
            yield p
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                message = "cancelled (shutdown)"
            elif isinstance(e, SyncerError):
                message = str(e).splitlines()[0] if str(e) else type(e).__name__
            elif isinstance(e, SESSION_ERRORS):
                message = f"database: {describe_session_error(e)}"
            else:
                message = f"internal error: {type(e).__name__}: {e}"
            # on the pass's own session, or (when that died) on another one of the pool
            for session in (conn, pool) if _usable(conn) else (pool,):
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        asyncio.wait_for(_finish(session, p, "failed", message[:2000]), 10)
                    )
                    break
            raise
        else:
            await _finish(conn, p, "ok", None)
    finally:
        try:
            if locked and _usable(conn):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        conn.execute(
                            sql("unlock_partition"), PARTITION_LOCK_CLASS, region, image_type
                        ),
                        10,
                    )
        finally:
            with contextlib.suppress(asyncpg.InterfaceError):  # already taken back (it died)
                await pool.release(conn)
