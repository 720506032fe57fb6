"""What ``syncer demo`` shows as it happens: the passes that finished and the events that were
committed since it last looked (``seq > cursor``: the feed's own ordering, read from SQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from syncer.store.queries import sql

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def head_seq(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval(sql("watch_head_seq")))


@dataclass
class EventsSince:
    """The events after a seq: how many of each kind, the newest few, and the new cursor."""

    by_kind: dict[str, int]
    newest: list[dict[str, Any]]  # newest first
    last_seq: int

    @property
    def count(self) -> int:
        return sum(self.by_kind.values())


async def events_after(pool: asyncpg.Pool, seq: int, newest: int = 20) -> EventsSince:
    async with pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
        kinds = await conn.fetch(sql("watch_event_kinds_after"), seq)
        rows = await conn.fetch(sql("watch_events_after"), seq, newest) if kinds else []
    last = max((int(r["last"]) for r in kinds), default=seq)
    return EventsSince({r["kind"]: int(r["n"]) for r in kinds}, [dict(r) for r in rows], last)


@dataclass
class FinishedRuns:
    """Follows ``ims.sync_runs``: each call returns the passes finished since the last one."""

    after: tuple[datetime, int] = (EPOCH, 0)

    async def skip_past(self, pool: asyncpg.Pool) -> None:
        """Start after the passes already finished (a demo run shows its own)."""
        row = await pool.fetchrow(sql("watch_runs_latest"))
        if row is not None:
            self.after = (row["finished_at"], row["id"])

    async def poll(self, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        rows = await pool.fetch(sql("watch_runs_finished_after"), *self.after)
        if rows:
            self.after = (rows[-1]["finished_at"], rows[-1]["id"])
        return [dict(r) for r in rows]
