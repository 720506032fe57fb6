"""Retention: a prefix of old events is removed in small batches without blocking writers or
readers; the boundary is recorded; cursors below it get 410 naming the resync endpoint; a
stored consumer offset is never moved."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import asyncpg
import pytest

from syncer.store.queries import sql
from tests.feed_helpers import get_json, insert_events, serve, with_tuning
from tests.integration.test_feed_http import assert_one_line_error

pytestmark = pytest.mark.no_replay_check(
    "the feed's transport tests write hand-made events without image rows"
)

OLD = "INSERT INTO ims.image_events (region, image_id, kind, occurred_at) VALUES ('r', $1, 'created', now() - $2::text::interval) RETURNING seq"


async def test_prefix_removed_boundary_recorded_cursors_410(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        # occurred_at is not monotonic in seq: the prefix stops at the first young event
        ages = ["3 days", "3 days", "1 hour", "3 days", "0 s"]
        seqs = [await conn.fetchval(OLD, f"i{n}", age) for n, age in enumerate(ages)]
        async with (
            serve(db, retention="1d", tuning=with_tuning(retention_batch=1)) as served,
            aiohttp.ClientSession() as http,
        ):
            _, page = await get_json(http, f"{served.url}/v1/events", since="0")
            cursors = [e["cursor"] for e in page["events"]]
            for name, cursor in (("at-first", cursors[0]), ("at-boundary", cursors[1])):
                async with http.put(
                    f"{served.url}/v1/consumers/{name}", json={"cursor": cursor}
                ) as r:
                    assert r.status == 200

            assert await served.feed.prune() == 2  # in batches of one
            meta = await conn.fetchrow("SELECT pruned_through, pruned_event_id FROM ims.feed_meta")
            assert meta["pruned_through"] == seqs[1]
            left = [
                r["seq"] for r in await conn.fetch("SELECT seq FROM ims.image_events ORDER BY 1")
            ]
            assert left == seqs[2:]  # the old event after a young one waits its turn

            # below the boundary: 410, naming the list-then-follow endpoint
            for url in ("/v1/events", "/v1/events/stream"):
                async with http.get(served.url + url, params={"since": cursors[0]}) as r:
                    doc = await assert_one_line_error(r, 410)
                assert doc["resync"] == "/v1/images" and doc["pruned_through"] == seqs[1]
                assert "retention" in doc["error"] and "/v1/images" in doc["hint"]
            async with http.get(
                f"{served.url}/v1/events/stream", headers={"Last-Event-ID": cursors[0]}
            ) as r:
                await assert_one_line_error(r, 410)
            async with http.put(
                f"{served.url}/v1/consumers/late", json={"cursor": cursors[0]}
            ) as r:
                await assert_one_line_error(r, 410)
            # AT the boundary nothing after it is gone: the cursor still serves the rest
            status, doc = await get_json(http, f"{served.url}/v1/events", since=cursors[1])
            assert status == 200 and [e["seq"] for e in doc["events"]] == seqs[2:]
            _, doc = await get_json(http, f"{served.url}/v1/events", since="0")
            assert [e["seq"] for e in doc["events"]] == seqs[2:]

            # offsets are never moved: the one below the boundary says it is gone
            rows = dict(await conn.fetch("SELECT name, seq FROM ims.feed_consumers"))
            assert rows == {"at-first": seqs[0], "at-boundary": seqs[1]}
            _, first = await get_json(http, f"{served.url}/v1/consumers/at-first")
            assert first["gone"] is True and first["resync"] == "/v1/images"
            assert first["cursor"] == cursors[0]
            _, ok = await get_json(http, f"{served.url}/v1/consumers/at-boundary")
            assert ok["gone"] is False and ok["lag_events"] == 3

    finally:
        await conn.close()


async def test_everything_pruned_the_boundary_is_the_head(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        for n in range(5):
            await conn.fetchval(OLD, f"i{n}", "2 days")
        async with serve(db, retention="1d") as served, aiohttp.ClientSession() as http:
            assert await served.feed.prune() == 5
            assert await conn.fetchval("SELECT count(*) FROM ims.image_events") == 0
            _, head = await get_json(http, f"{served.url}/v1/events", since="now")
            _, oldest = await get_json(http, f"{served.url}/v1/events", since="0")
            assert head == oldest and head["events"] == []
            new = await insert_events(conn, 2)
            for cursor in (head["next_cursor"], "0"):
                status, doc = await get_json(http, f"{served.url}/v1/events", since=cursor)
                assert status == 200 and [e["seq"] for e in doc["events"]] == new
    finally:
        await conn.close()


async def test_pruning_blocks_neither_writers_nor_readers(db: str) -> None:
    """A retention batch held open mid-transaction: writers commit and readers read meanwhile."""
    conn, pruner = await asyncpg.connect(db), await asyncpg.connect(db)
    try:
        await conn.execute(
            "INSERT INTO ims.image_events (region, image_id, kind, occurred_at)"
            " SELECT 'r', 'old' || g, 'created', now() - interval '2 days'"
            " FROM generate_series(1, 2000) g"
        )
        async with serve(db, retention="1d") as served, aiohttp.ClientSession() as http:
            _, head = await get_json(http, f"{served.url}/v1/events", since="now")
            tx = pruner.transaction()
            await tx.start()
            row = await pruner.fetchrow(sql("prune_events"), 86400.0, 1000)
            assert row["removed"] == 1000
            began = time.monotonic()
            new = await asyncio.wait_for(insert_events(conn, 3), 2)  # a writer commits
            status, doc = await asyncio.wait_for(
                get_json(http, f"{served.url}/v1/events", since=head["next_cursor"]), 2
            )
            assert status == 200 and [e["seq"] for e in doc["events"]] == new
            status, doc = await get_json(http, f"{served.url}/v1/events", since="0", limit="5")
            assert status == 200 and doc["events"][0]["seq"] == 1  # not yet committed
            assert time.monotonic() - began < 2
            await tx.commit()
            _, doc = await get_json(http, f"{served.url}/v1/events", since="0", limit="1")
            assert doc["events"][0]["seq"] == 1001
    finally:
        await conn.close()
        await pruner.close()
