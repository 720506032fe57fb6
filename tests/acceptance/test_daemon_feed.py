"""The change feed as `syncer run` serves it: a stream follows one replica, that replica is
killed, the consumer reconnects to another with Last-Event-ID and gets exactly the rest; and
/readyz answers within a second while every partition is being swept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from syncer.simulator import Catalog, Simulator
from tests.daemon_env import Daemon, daemon_for, until

REGIONS = ["cn-north-4", "ap-southeast-1"]


@pytest.fixture
async def conn(db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db)
    yield c
    await c.close()


def replica(tmp_path: Path, db: str, sim: Simulator, name: str, **sync: object) -> Daemon:
    return daemon_for(tmp_path, db, sim, REGIONS, name, **sync)


async def follow(url: str, last_id: str | None, got: list[int], stop_after: float) -> str | None:
    """Read the SSE stream into ``got`` (seqs) for ``stop_after`` seconds or until it breaks;
    the last event id seen."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    query = "" if last_id else "?since=0"
    deadline = time.monotonic() + stop_after
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=5)) as s,
            s.get(f"{url}/v1/events/stream{query}", headers=headers) as r,
        ):
            assert r.status == 200
            event_id = data = None
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "":
                    if data is not None:
                        got.append(orjson.loads(data)["seq"])
                    if event_id is not None:
                        last_id = event_id
                    event_id = data = None
                    if time.monotonic() > deadline:
                        break
    except (aiohttp.ClientError, TimeoutError):
        pass  # the server went away: resume elsewhere
    return last_id


async def test_a_stream_resumes_on_another_replica_after_a_kill(
    tmp_path: Path, db: str, conn: asyncpg.Connection
) -> None:
    catalog = Catalog(regions=REGIONS, images_per_partition=60, seed=12)
    async with Simulator(catalog, change_rate=0.5, seed=12) as sim:
        a = await replica(tmp_path, db, sim, "a").start()
        b = await replica(tmp_path, db, sim, "b").start()
        try:
            await a.wait_ready()
            await b.wait_ready()
            got: list[int] = []
            last = await follow(a.url, None, got, stop_after=3)
            assert got, "no event streamed from the first replica"
            reader = asyncio.create_task(follow(a.url, last, got, stop_after=60))
            await asyncio.sleep(2)
            await a.kill()
            last = await reader
            await asyncio.sleep(2)  # more events while the consumer is away
            last = await follow(b.url, last, got, stop_after=4)
            sim.change_rate = 0.0
            await asyncio.sleep(3)  # let the last passes land
            await follow(b.url, last, got, stop_after=3)
        finally:
            rc, _ = await b.stop()
            if a.proc is not None and a.proc.returncode is None:
                await a.kill()
        assert rc == 0
    table = [r["seq"] for r in await conn.fetch("SELECT seq FROM ims.image_events ORDER BY seq")]
    assert got == table[: len(got)], "missed, repeated or misordered an event"
    assert len(got) >= len(table) - 50, (len(got), len(table))  # nearly all: the end is quiet


async def test_readyz_answers_within_a_second_under_full_sync_load(
    tmp_path: Path, db: str, conn: asyncpg.Connection
) -> None:
    catalog = Catalog(regions=REGIONS, images_per_partition=3000, seed=2)
    async with Simulator(catalog) as sim:
        d = await replica(
            tmp_path, db, sim, "load", full_interval="1h", delta_interval="1h", page_size=200
        ).start()
        try:
            await d.wait_ready(within=60)
            await until(
                lambda: conn.fetchval(
                    "SELECT count(*) >= 4 FROM ims.sync_runs WHERE outcome = 'running'"
                ),
                30,
                "passes under way",
                step=0.05,
            )
            slowest = 0.0
            for _ in range(10):
                began = time.monotonic()
                status, _ = await d.get("/readyz")
                slowest = max(slowest, time.monotonic() - began)
                assert status == 200
                await asyncio.sleep(0.1)
            assert slowest < 1.0, slowest
            assert await conn.fetchval(
                "SELECT count(*) >= 1 FROM ims.sync_runs WHERE outcome = 'running'"
            ), "the load was gone before the probes"
        finally:
            rc, _ = await d.stop()
        assert rc == 0
