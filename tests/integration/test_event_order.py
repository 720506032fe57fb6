"""The feed's cursor: seq increases in COMMIT order, so `seq > cursor` never skips an event.

Two writers insert events and commit in the opposite order of their inserts. With the
statement trigger that serializes writers, the second writer is *seen* waiting for the first
one's advisory lock (pg_locks), so it can only commit after it; a reader following
`seq > cursor` sees both. Each test also runs against the same table with the mechanism taken
away (a plain identity column, or the trigger dropped) and shows the reader losing events: the
tests fail when the mechanism is gone, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import pytest

from syncer.records import digest_page
from syncer.store.passes import EVENT_LOCK_KEY, partition_pass
from syncer.store.pool import open_pool

INSERT_EVENT = (
    "INSERT INTO {table} (region, image_id, kind, new_status) VALUES ('r', $1, 'created', 'active')"
)


async def naive_table(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE naive_events (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " region text, image_id text, kind text, new_status text)"
        )
    finally:
        await conn.close()
    return "naive_events"


async def drop_the_trigger(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TRIGGER image_events_serialize ON ims.image_events")
    finally:
        await conn.close()


async def waits_for_the_event_lock(observer: asyncpg.Connection, pid: int) -> bool:
    """Is backend ``pid`` waiting for the event writers' advisory lock? (Polled up to 5 s: a
    writer that is not serialized finishes its INSERT instead, and then never waits.)"""
    for _ in range(100):
        waiting = await observer.fetchval(
            "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory'"
            " AND NOT granted AND ((classid::bigint << 32) | objid::bigint) = $2",
            pid,
            EVENT_LOCK_KEY,
        )
        if waiting:
            return True
        state = await observer.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
        if state == "idle in transaction":  # its INSERT is done: it did not wait
            return False
        await asyncio.sleep(0.05)
    raise AssertionError(f"backend {pid} neither waited nor finished within 5 s")


async def run_opposite_commits(dsn: str, table: str) -> tuple[set[str], set[str], bool]:
    """Writer A inserts first, B second; B is committed first whenever it can be.
    Returns (ids the reader saw, all ids, whether B had to wait for A's lock)."""
    a, b, reader = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        await a.execute(INSERT_EVENT.format(table=table), "from-a")
        b_insert = asyncio.create_task(b.execute(INSERT_EVENT.format(table=table), "from-b"))
        blocked = await waits_for_the_event_lock(reader, b.get_server_pid())
        seen: set[str] = set()
        cursor = 0

        async def follow() -> None:
            nonlocal cursor
            for row in await reader.fetch(
                f"SELECT seq, image_id FROM {table} WHERE seq > $1 ORDER BY seq", cursor
            ):
                seen.add(row["image_id"])
                cursor = row["seq"]

        if blocked:  # B cannot get its seq until A commits
            await ta.commit()
            await b_insert
            await follow()
            await tb.commit()
        else:  # B has its (higher) seq already and commits before A
            await b_insert
            await tb.commit()
            await follow()
            await ta.commit()
        await follow()
        return seen, {"from-a", "from-b"}, blocked
    finally:
        for c in (a, b, reader):
            await c.close()


@pytest.mark.no_replay_check("hand-made events without image rows (and a dropped trigger)")
async def test_seq_follows_commit_order(db: str) -> None:
    seen, written, blocked = await run_opposite_commits(db, "ims.image_events")
    assert blocked, "the second writer did not wait for the first one's lock"
    assert seen == written


@pytest.mark.no_replay_check("hand-made events without image rows (and a dropped trigger)")
async def test_without_the_trigger_the_reader_misses_an_event(db: str) -> None:
    """The mechanism removed: the same script loses A's event for good."""
    await drop_the_trigger(db)
    seen, written, blocked = await run_opposite_commits(db, "ims.image_events")
    assert not blocked
    assert written - seen == {"from-a"}


async def test_identity_column_reader_misses_an_event(db: str) -> None:
    """The control: with a plain identity column the same reader loses A's event for good."""
    seen, written, blocked = await run_opposite_commits(db, await naive_table(db))
    assert not blocked
    assert seen == {"from-b"} and written - seen == {"from-a"}


async def race(dsn: str, writers: int = 8, per_writer: int = 40) -> tuple[list[int], list[int]]:
    """Writers committing concurrently (each holding its transaction open a little after its
    INSERT), one follower polling `seq > cursor`. Returns (seqs followed, seqs in the table)."""
    stop = asyncio.Event()
    conns = [await asyncpg.connect(dsn) for _ in range(writers + 1)]
    seen: list[int] = []

    async def write(conn: asyncpg.Connection, w: int) -> None:
        for i in range(per_writer):
            async with conn.transaction():
                await conn.executemany(
                    INSERT_EVENT.format(table="ims.image_events"),
                    [(f"{w}-{i}-{k}",) for k in range(3)],
                )
                await conn.execute("SELECT pg_sleep(0.002)")  # commit a little later

    async def follow(conn: asyncpg.Connection) -> None:
        cursor = 0
        while True:
            done = stop.is_set()
            rows = await conn.fetch(
                "SELECT seq FROM ims.image_events WHERE seq > $1 ORDER BY seq", cursor
            )
            for r in rows:
                seen.append(r["seq"])
                cursor = r["seq"]
            if done and not rows:
                return
            await asyncio.sleep(0.001)

    try:
        follower = asyncio.create_task(follow(conns[-1]))
        await asyncio.gather(*(write(c, w) for w, c in enumerate(conns[:-1])))
        stop.set()
        await follower
        table = [r["seq"] for r in await conns[-1].fetch("SELECT seq FROM ims.image_events")]
        return seen, sorted(table)
    finally:
        for c in conns:
            await c.close()


@pytest.mark.no_replay_check("hand-made events without image rows (and a dropped trigger)")
async def test_concurrent_writers_never_skip(db: str) -> None:
    """Many writers racing, one follower: it ends with every event, each once, in order."""
    seen, table = await race(db)
    assert len(table) == 8 * 40 * 3
    assert seen == table


@pytest.mark.no_replay_check("hand-made events without image rows (and a dropped trigger)")
async def test_concurrent_writers_without_the_trigger_lose_events(db: str) -> None:
    await drop_the_trigger(db)
    seen, table = await race(db)
    assert len(table) == 8 * 40 * 3
    assert set(seen) < set(table), "no event was lost without the trigger (test too weak)"


def page_of(partition: int, page: int, size: int = 20) -> list[dict[str, Any]]:
    return [
        {
            "id": f"p{partition}-{page:03d}-{i:02d}",
            "name": f"image {i}",
            "status": "active",
            "created_at": f"2024-01-01T00:{page // 60:02d}:{page % 60:02d}Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }
        for i in range(size)
    ]


async def test_concurrent_page_writes_are_followed_exactly(db: str) -> None:
    """Real page writes (the sync's own transactions) of four partitions at once, with a
    follower: it sees exactly the table's events, each once, in seq order."""
    pool = await open_pool(db, size=6)
    follower_conn = await asyncpg.connect(db)
    stop = asyncio.Event()
    seen: list[int] = []

    async def write(partition: int) -> None:
        rng = random.Random(partition)
        async with partition_pass(pool, "r", f"t{partition}", "full") as p:
            for n in range(25):
                await p.apply_page(digest_page(page_of(partition, n)))
                await asyncio.sleep(rng.random() * 0.003)

    async def follow() -> None:
        cursor = 0
        while True:
            done = stop.is_set()
            rows = await follower_conn.fetch(
                "SELECT seq FROM ims.image_events WHERE seq > $1 ORDER BY seq", cursor
            )
            seen.extend(r["seq"] for r in rows)
            if rows:
                cursor = rows[-1]["seq"]
            if done and not rows:
                return
            await asyncio.sleep(0.001)

    try:
        follower = asyncio.create_task(follow())
        await asyncio.gather(*(write(n) for n in range(4)))
        stop.set()
        await follower
        table = [r["seq"] for r in await pool.fetch("SELECT seq FROM ims.image_events ORDER BY 1")]
    finally:
        await follower_conn.close()
        await pool.close()
    assert len(table) == 4 * 25 * 20
    assert seen == table
