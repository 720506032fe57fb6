"""Soak: many writer transactions interleave and commit out of order (some roll back after
inserting, leaving seq gaps) while an HTTP long-poll consumer, an SSE consumer and a SQL
consumer follow. Each ends with exactly the committed events, in seq order: no gap, no
duplicate. A few seconds here; ``SYNCER_SOAK_SECONDS=600`` for a long run."""

from __future__ import annotations

import asyncio
import os
import random

import aiohttp
import asyncpg
import orjson
import pytest

from tests.feed_helpers import get_json, serve, sse_events, until

pytestmark = pytest.mark.no_replay_check(
    "the feed's transport tests write hand-made events without image rows"
)

SECONDS = float(os.environ.get("SYNCER_SOAK_SECONDS", "3"))
WRITERS = 6

INSERT = """
INSERT INTO ims.image_events (region, image_id, kind, new_status)
SELECT 'cn-north-4', $1 || '-' || g, 'created', 'active' FROM generate_series(1, $2) g
"""


async def test_soak_every_consumer_gets_exactly_the_committed_events(db: str) -> None:
    stop = asyncio.Event()
    rng = random.Random(9)
    rolled_back = 0

    async def write(w: int) -> None:
        nonlocal rolled_back
        conn = await asyncpg.connect(db)
        try:
            n = 0
            while not stop.is_set():
                n += 1
                tx = conn.transaction()
                await tx.start()
                # work before the events: transactions start in one order, insert in another
                await asyncio.sleep(rng.random() * 0.01)
                await conn.execute(INSERT, f"w{w}-{n}", rng.randint(1, 8))
                if rng.random() < 0.05:
                    await tx.rollback()  # its seq numbers are never seen: a gap
                    rolled_back += 1
                    continue
                await asyncio.sleep(rng.random() * 0.002)
                await tx.commit()
        finally:
            await conn.close()

    async with serve(db) as served, aiohttp.ClientSession() as http:
        _, head = await get_json(http, f"{served.url}/v1/events", since="now")
        start = head["next_cursor"]
        polled: list[int] = []
        streamed: list[int] = []
        queried: list[int] = []

        async def poll() -> None:
            cursor = start
            while True:
                _, doc = await get_json(
                    http,
                    f"{served.url}/v1/events",
                    since=cursor,
                    limit=str(rng.randint(1, 60)),
                    wait="1",
                )
                polled.extend(e["seq"] for e in doc["events"])
                cursor = doc["next_cursor"]

        async def stream() -> None:
            async with http.get(f"{served.url}/v1/events/stream?since={start}") as resp:
                async for ev in sse_events(resp):
                    streamed.append(orjson.loads(ev.data)["seq"])

        async def query() -> None:
            conn = await asyncpg.connect(db)
            try:
                cursor = 0
                while True:
                    rows = await conn.fetch(
                        "SELECT seq FROM ims.image_events WHERE seq > $1 ORDER BY seq LIMIT 500",
                        cursor,
                    )
                    for r in rows:
                        queried.append(r["seq"])
                        cursor = r["seq"]
                    await asyncio.sleep(0.005)
            finally:
                await conn.close()

        consumers = [asyncio.create_task(c()) for c in (poll, stream, query)]
        writers = [asyncio.create_task(write(w)) for w in range(WRITERS)]
        await asyncio.sleep(SECONDS)
        stop.set()
        await asyncio.gather(*writers)
        conn = await asyncpg.connect(db)
        try:
            committed = [
                r["seq"] for r in await conn.fetch("SELECT seq FROM ims.image_events ORDER BY seq")
            ]
        finally:
            await conn.close()
        done = await until(
            lambda: (
                len(polled) >= len(committed)
                and len(streamed) >= len(committed)
                and len(queried) >= len(committed)
            ),
            within=15,
        )
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        assert done, (len(committed), len(polled), len(streamed), len(queried))
        gaps = committed[-1] - committed[0] + 1 - len(committed)
        assert rolled_back == 0 or gaps > 0  # the rollbacks did leave holes in seq
        assert len(committed) > 100 * SECONDS
        for name, got in (("long-poll", polled), ("sse", streamed), ("sql", queried)):
            assert got == committed, name
        print(f"soak: {len(committed)} events, {rolled_back} rolled back, {gaps} seq gaps")
