"""What every row of the fault matrix (docs/reliability.md) asserts: nothing committed lost, no
false tombstone, no missing or doubled event (the replay check), and the next cycle recovers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from syncer.store.verify import verify_replay
from syncer.sync.engine import PassResult


@dataclass
class Before:
    live: set[str]
    seqs: set[int]
    head: int


async def before(pool: asyncpg.Pool) -> Before:
    live = {r[0] for r in await pool.fetch("SELECT image_id FROM ims.current_images")}
    seqs = {r[0] for r in await pool.fetch("SELECT seq FROM ims.image_events")}
    return Before(live, seqs, max(seqs, default=0))


async def assert_no_harm(pool: asyncpg.Pool, was: Before, listed: set[str]) -> None:
    """Nothing committed lost, no false tombstone, the log replays."""
    now = await before(pool)
    assert was.seqs <= now.seqs, "an event committed before the fault is gone"
    assert (was.live & listed) <= now.live, "a listed image was tombstoned"
    report = await verify_replay(pool)
    assert report.ok, report.lines()


async def assert_recovered(
    pool: asyncpg.Pool, result: PassResult, catalog: list[dict[str, Any]], was: Before,
    expected: dict[str, str],
) -> None:  # fmt: skip
    """The sweep after the fault completed, the database equals the catalog, and each change
    has exactly one event (``expected``: image id → kind) since the changes were made."""
    assert result.outcome == "ok", result.error
    rows = await pool.fetch("SELECT image_id, raw FROM ims.current_images")
    assert {r["image_id"]: orjson.loads(r["raw"]) for r in rows} == {o["id"]: o for o in catalog}
    events = await pool.fetch(
        "SELECT image_id, kind FROM ims.image_events WHERE seq > $1 ORDER BY seq", was.head
    )
    assert sorted((e["image_id"], e["kind"]) for e in events) == sorted(expected.items())
    report = await verify_replay(pool)
    assert report.ok, report.lines()
