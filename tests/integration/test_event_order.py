"""The feed's cursor: seq increases in COMMIT order, so `seq > cursor` never skips an event.

Two writers insert events and commit in the opposite order of their inserts. A reader that
reads between the two commits and then follows `seq > cursor` must see both. The same script
against a plain identity column shows the naive reader losing one, so the test can fail.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

INSERT_EVENT = (
    "INSERT INTO {table} (region, image_id, kind, new_status) VALUES ('r', $1, 'created', 'active')"
)


async def naive_table(conn: asyncpg.Connection) -> str:
    await conn.execute(
        "CREATE TABLE naive_events (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " region text, image_id text, kind text, new_status text)"
    )
    return "naive_events"


async def run_opposite_commits(dsn: str, table: str) -> tuple[set[str], set[str]]:
    """Writer A inserts first, B second; B commits first. Returns (ids the reader saw, all ids)."""
    a, b, reader = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        await a.execute(INSERT_EVENT.format(table=table), "from-a")
        b_insert = asyncio.create_task(b.execute(INSERT_EVENT.format(table=table), "from-b"))
        # With serialized writers B waits here for A's lock; give it the chance to get ahead.
        done, _ = await asyncio.wait({b_insert}, timeout=0.5)
        seen: set[str] = set()
        cursor = 0

        async def follow() -> None:
            nonlocal cursor
            for row in await reader.fetch(
                f"SELECT seq, image_id FROM {table} WHERE seq > $1 ORDER BY seq", cursor
            ):
                seen.add(row["image_id"])
                cursor = row["seq"]

        if done:  # naive: B already has its number and commits before A
            await tb.commit()
            await follow()
            await ta.commit()
        else:  # serialized: B cannot proceed until A commits, whatever we do
            await ta.commit()
            await b_insert
            await follow()
            await tb.commit()
        await follow()
        return seen, {"from-a", "from-b"}
    finally:
        for c in (a, b, reader):
            await c.close()


async def test_seq_follows_commit_order(db: str) -> None:
    seen, written = await run_opposite_commits(db, "ims.image_events")
    assert seen == written


async def test_identity_column_reader_misses_an_event(db: str) -> None:
    """The control: with a plain identity column the same reader loses A's event for good."""
    conn = await asyncpg.connect(db)
    try:
        table = await naive_table(conn)
    finally:
        await conn.close()
    seen, written = await run_opposite_commits(db, table)
    assert seen == {"from-b"} and written - seen == {"from-a"}


@pytest.mark.parametrize("writers", [8])
async def test_concurrent_writers_never_skip(db: str, writers: int) -> None:
    """Many writers racing, one follower polling `seq > cursor`: it ends with every event."""
    per_writer, stop = 40, asyncio.Event()
    conns = [await asyncpg.connect(db) for _ in range(writers + 1)]
    seen: list[int] = []

    async def write(conn: asyncpg.Connection, w: int) -> None:
        for i in range(per_writer):
            async with conn.transaction():
                await conn.execute("SELECT pg_sleep(0.001)")
                await conn.executemany(
                    INSERT_EVENT.format(table="ims.image_events"),
                    [(f"{w}-{i}-{k}",) for k in range(3)],
                )

    async def follow(conn: asyncpg.Connection) -> None:
        cursor = 0
        while True:
            rows = await conn.fetch(
                "SELECT seq FROM ims.image_events WHERE seq > $1 ORDER BY seq", cursor
            )
            for r in rows:
                seen.append(r["seq"])
                cursor = r["seq"]
            if stop.is_set() and not rows:
                return
            await asyncio.sleep(0.001)

    try:
        follower = asyncio.create_task(follow(conns[-1]))
        await asyncio.gather(*(write(c, w) for w, c in enumerate(conns[:-1])))
        stop.set()
        await follower
        total = await conns[-1].fetchval("SELECT count(*) FROM ims.image_events")
        assert total == writers * per_writer * 3
        assert len(seen) == total and seen == sorted(seen)
    finally:
        for c in conns:
            await c.close()
