"""Run bookkeeping: one ``ims.sync_runs`` row per partition pass, and what it counted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import asyncpg

from syncer.store.queries import sql

Mode = Literal["full", "delta"]


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


async def open_run(
    conn: asyncpg.Connection, region: str, image_type: str, mode: Mode, worker: str
) -> asyncpg.Record:
    """In the transaction that took the partition's lease: its row in ims.partitions, the runs
    its previous holder left open closed as failed, and this pass's run opened
    (``id``, ``started_at``)."""
    await conn.execute(sql("ensure_partition"), region, image_type)
    await conn.fetch(sql("close_orphaned_runs"), region, image_type)
    run: asyncpg.Record = await conn.fetchrow(sql("start_run"), region, image_type, mode, worker)
    return run


async def finish_run(
    session: asyncpg.Connection | asyncpg.Pool,
    run_id: int,
    outcome: str,
    counts: PassCounts,
    *,
    error: str | None = None,
    note: str | None = None,
) -> None:
    """Close the run (only if it is still open: one closed meanwhile keeps its verdict)."""
    c = counts
    await session.execute(
        sql("finish_run"),
        run_id,
        outcome,
        c.pages,
        c.images_seen,
        c.created,
        c.updated,
        c.deleted,
        error,
        note,
        c.unfit,
    )
