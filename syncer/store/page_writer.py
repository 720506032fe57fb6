"""The page writer: one page of a listing landed in PostgreSQL.

One round trip when nothing on the page changed (the prefilter, in autocommit, also remembers
what a full sweep saw); otherwise ONE transaction: COPY of only the changed rows, one set-based
upsert that stages one event per changed row, the lease fence, and the page's events appended
LAST (the event writers' lock is held only from there to COMMIT).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg
import orjson

from syncer.records import COLUMNS, PageDigest
from syncer.store.leases import Lease, fence
from syncer.store.queries import sql
from syncer.store.runs import Mode, PassCounts

log = logging.getLogger(__name__)

#: Images whose unfit values are logged one by one per pass (the rest are only counted).
UNFIT_LOGGED = 5

#: The transaction-level advisory lock that serializes event writers (the trigger of
#: migration 0001 takes it; a test keeps the two equal).
EVENT_LOCK_KEY = 7_140_201_001


@dataclass
class PageWriter:
    conn: asyncpg.Connection
    region: str
    image_type: str
    mode: Mode
    run_id: int
    lease: Lease
    counts: PassCounts = field(default_factory=PassCounts)
    listed_deleted: int = 0  # images this pass saw listed with status "deleted"

    async def apply_page(self, page: PageDigest) -> PassCounts:
        """Apply one page: one round trip when nothing changed, else one write transaction.

        Images not known yet are COPied straight into ims.image_rows (the bulk of a first sync
        costs what a raw COPY costs); known images that changed go through the staged upsert.
        The events of the page are appended last, in the same transaction as its rows.
        """
        conn, counts = self.conn, self.counts
        hashes = b"".join(page.hashes)
        if len(hashes) != 16 * len(page.ids):
            raise ValueError("content hashes must be 16 bytes each")
        ids = orjson.dumps(page.ids).decode()
        args = (self.region, self.image_type, ids, hashes, self.mode == "full")
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
            kinds += ["created"] * len(fresh)
        if staged:
            await conn.copy_records_to_table("sync_stage", records=staged, columns=COLUMNS)
            upserted = await conn.fetch(sql("page_upsert"), self.region, self.image_type)
            kinds += [r["kind"] for r in upserted]
        await fence(conn, self.lease)
        if kinds:
            await conn.execute(
                sql("append_page_events"),
                self.region,
                self.run_id,
                orjson.dumps([r.image_id for r in fresh]).decode(),
                orjson.dumps([r.status for r in fresh]).decode(),
            )
        # counted once the transaction's statements are done (a rollback re-raises past here)
        counts.written += len(records)
        counts.add_kinds(kinds)
        if unfit:
            self._note_unfit(unfit)
