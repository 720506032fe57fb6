"""The tombstone policy: what a COMPLETE full sweep concludes from the images it did not see.

Every live image of the partition the sweep did not list has its miss count raised; one missed
by ``delete_after_missed_sweeps`` consecutive complete sweeps is tombstoned (event ``deleted``).
A sweep that saw fewer than ``min_sweep_ratio`` of the partition's live images tombstones
nothing and says why: a listing that suddenly shrinks is more likely an API fault than a mass
deletion. Only ever applied after a complete listing; a failed pass never gets here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from syncer.store.leases import fence
from syncer.store.page_writer import PageWriter
from syncer.store.queries import sql


@dataclass(frozen=True)
class SweepVerdict:
    seen: int
    live: int
    tombstoned: int
    skipped_reason: str | None = None


async def judge_absences(
    p: PageWriter,
    *,
    missed_sweeps_to_delete: int,
    min_ratio: float,
    started_at: datetime,
    last_full_sweep_at: datetime | None,
    covered_from: datetime,
) -> SweepVerdict:
    """After a COMPLETE full sweep: count misses, tombstone, record the sweep (``started_at``)
    and move the delta watermark to ``covered_from``, in one fenced transaction."""
    assert p.mode == "full"
    conn = p.conn
    row = await conn.fetchrow(sql("sweep_counts"), p.region, p.image_type)
    seen, live = int(row["seen"]), int(row["live"])
    if live and seen < min_ratio * live:
        reason = (
            f"tombstoned nothing: the sweep saw {seen} images but the partition holds {live} "
            f"live (below min_sweep_ratio {min_ratio:g})"
        )
        async with conn.transaction():
            await fence(conn, p.lease)
            await conn.execute(
                sql("record_skipped_sweep"), p.region, p.image_type, reason, covered_from
            )
        return SweepVerdict(seen, live, 0, reason)
    # Every listed image is now a row of this partition, live unless it was listed as
    # deleted; seen counts each id once. So the live rows the sweep did not see number
    # live - (seen - listed_deleted): when that is 0, the anti-join over the whole partition
    # would find nothing (the common case) and is skipped.
    unseen = live - (seen - p.listed_deleted)
    async with conn.transaction():
        kinds: list[str] = []
        if unseen > 0:
            await conn.execute(sql("prepare_mark_missed"))
            kinds = [
                r["kind"]
                for r in await conn.fetch(
                    sql("mark_missed"),
                    p.region,
                    p.image_type,
                    last_full_sweep_at,
                    missed_sweeps_to_delete,
                )
            ]
        await conn.execute(
            sql("record_full_sweep"), p.region, p.image_type, started_at, p.run_id, covered_from
        )
        await fence(conn, p.lease)
        if kinds:
            await conn.execute(sql("append_events"), p.region, p.run_id)
    p.counts.add_kinds(kinds)
    return SweepVerdict(seen, live, len(kinds))
