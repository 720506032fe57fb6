"""The change feed's figures (issue 9, "Done when"):

1. commit-to-SSE latency: single-event transactions committed at ~200/s while one SSE client
   follows; from the writer's COMMIT returning to the client holding the event (median, p99;
   targets < 100 ms, < 500 ms);
2. events/s delivered to 1 and to 10 SSE clients following the head while a writer commits
   1,000-event transactions as fast as it can (target ≥ 5,000/s to each);
3. the feed process's RSS and database connections with 1,000 idle streams open (targets
   < 100 MB, ≤ 2 connections);
4. shown, not judged: a catch-up read (10 clients streaming 100,000 retained events from the
   start, from the database rather than the in-memory tail), and retention deleting 100,000
   events in batches while a writer commits (delete rate, the writer's worst commit).

The feed is served by `python -m bench.feed_server` in its own process (``BENCH_FEED_SERVER=run``
serves it with `syncer run` instead); clients run in processes of their own; PostgreSQL is a
durable (fsync on) embedded server. All share this machine's cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import psutil

from bench.common import Check, SuiteResult, free_port, wait_port
from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate

EVENTS = int(os.environ.get("BENCH_FEED_EVENTS", "100000"))
LATENCY_SAMPLES = int(os.environ.get("BENCH_FEED_LATENCY_SAMPLES", "2000"))
IDLE_STREAMS = int(os.environ.get("BENCH_FEED_IDLE", "1000"))
INSERT = """
INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status, changes)
SELECT 'cn-north-4', $1 || '-' || g, 'status_changed', 'saving', 'active',
       '{"status": ["saving", "active"], "updated_at": ["2026-12-01T10:00:00Z", "2026-12-01T10:00:07Z"]}'::jsonb
FROM generate_series(1, $2) g
"""
MB = 1024 * 1024


def write_config(folder: str, dsn: str, port: int) -> Path:
    path = Path(folder) / "feed.toml"
    path.write_text(
        f'[database]\ndsn = "{dsn}"\n[api]\nauth = "none"\n[sync]\nregions = ["cn-north-4"]\n'
        f'[feed]\nlisten = "127.0.0.1:{port}"\n'
    )
    return path


@contextlib.contextmanager
def feed_process(config: Path, port: int) -> Iterator[psutil.Process]:
    if os.environ.get("BENCH_FEED_SERVER") == "run":
        args = [sys.executable, "-m", "syncer", "--config", str(config), "run"]
    else:
        args = [sys.executable, "-m", "bench.feed_server", "--config", str(config)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, timeout=60)
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if proc.returncode not in (0, -15) and proc.stderr is not None:
            print(f"  feed server exited {proc.returncode}: {proc.stderr.read()[-500:]}")


@contextlib.asynccontextmanager
async def clients(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.feed_clients",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise SystemExit(f"feed clients did not start: {line!r}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def head(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/v1/events", params={"since": "now"}) as resp:
        return str((await resp.json())["next_cursor"])


async def latency(dsn: str, url: str) -> list[float]:
    """Seconds from COMMIT returning to the SSE client holding the event."""
    committed: dict[str, float] = {}
    received: dict[str, float] = {}
    conn = await asyncpg.connect(dsn)
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{url}/v1/events/stream") as resp,
        ):
            assert resp.status == 200

            async def read() -> None:
                async for line in resp.content:
                    if line.startswith(b"data: "):
                        image_id = orjson.loads(line[6:])["image_id"]
                        received[image_id] = time.monotonic()
                        if len(received) >= LATENCY_SAMPLES:
                            return

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.5)
            for i in range(LATENCY_SAMPLES):
                await conn.execute(INSERT, f"lat{i}", 1)
                committed[f"lat{i}-1"] = time.monotonic()
                await asyncio.sleep(0.005)
            await asyncio.wait_for(reader, 30)
    finally:
        await conn.close()
    return [received[k] - t for k, t in committed.items()]


async def follow_rate(dsn: str, url: str, n_clients: int) -> tuple[list[float], float]:
    """Per-client events/s following the head while EVENTS are committed, and the writer's
    own rate."""
    async with aiohttp.ClientSession() as http:
        cursor = await head(http, url)
    async with clients("throughput", url, str(n_clients), cursor, str(EVENTS)) as proc:
        conn = await asyncpg.connect(dsn)
        try:
            began = time.monotonic()
            for b in range(EVENTS // 1000):
                await conn.execute(INSERT, f"t{n_clients}-{b}", 1000)
            wrote = EVENTS / (time.monotonic() - began)
        finally:
            await conn.close()
        return await _rates(proc, n_clients), wrote


async def _rates(proc: asyncio.subprocess.Process, n: int) -> list[float]:
    assert proc.stdout is not None
    rates = []
    for _ in range(n):
        r = orjson.loads(await asyncio.wait_for(proc.stdout.readline(), 300))
        if r["events"] < EVENTS:
            raise SystemExit(f"a client got {r['events']} of {EVENTS} events")
        rates.append((r["events"] - 1) / max(r["last"] - r["first"], 1e-9))
    return rates


async def catch_up_rate(url: str, n_clients: int, cursor: str) -> list[float]:
    async with clients("throughput", url, str(n_clients), cursor, str(EVENTS)) as proc:
        return await _rates(proc, n_clients)


async def idle_cost(dsn: str, url: str, server: psutil.Process) -> tuple[float, int, int, float]:
    """RSS and connections of the feed process with IDLE_STREAMS idle streams open."""
    base_rss = server.memory_info().rss
    async with clients("idle", url, str(IDLE_STREAMS)) as proc:
        await asyncio.sleep(3)  # idle: what they hold, not what opening them took
        rss = server.memory_info().rss
        conn = await asyncpg.connect(dsn)
        try:
            feed_conns = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'syncer-feed%'"
            )
            all_conns = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        assert proc.stdin is not None
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
    return rss / MB, int(feed_conns), int(all_conns), base_rss / MB


async def retention_figures(dsn: str) -> tuple[float, float, float]:
    """Delete rate of retention over EVENTS old events in batches, and a writer's median and
    worst commit meanwhile (seconds)."""
    from syncer.store.events import FeedStore

    conn = await asyncpg.connect(dsn)
    await conn.execute(
        "INSERT INTO ims.image_events (region, image_id, kind, occurred_at)"
        " SELECT 'r', 'old' || g, 'created', now() - interval '40 days'"
        " FROM generate_series(1, $1) g",
        EVENTS,
    )
    commits: list[float] = []
    done = asyncio.Event()

    async def write() -> None:
        i = 0
        while not done.is_set():
            t = time.monotonic()
            await conn.execute(INSERT, f"ret{i}", 10)
            commits.append(time.monotonic() - t)
            i += 1
            await asyncio.sleep(0.01)

    writer = asyncio.create_task(write())
    try:
        async with FeedStore.open(dsn, size=2) as store:
            began, removed = time.monotonic(), 0
            while True:
                r = await store.prune(30 * 86400.0, 2000)
                removed += r.removed
                if r.removed < 2000:
                    break
            seconds = time.monotonic() - began
    finally:
        done.set()
        await writer
        await conn.close()
    return removed / seconds, statistics.median(commits), max(commits)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


async def run() -> SuiteResult:
    with contextlib.ExitStack() as stack, EmbeddedPostgres(durable=True) as pg:
        await migrate(pg.dsn)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="syncer-bench-feed-"))
        config = write_config(folder, pg.dsn, port)
        with feed_process(config, port) as server:
            idle_rss, feed_conns, all_conns, base_rss = await idle_cost(pg.dsn, url, server)
            lat = await latency(pg.dsn, url)
            one, wrote_one = await follow_rate(pg.dsn, url, 1)
            ten, wrote_ten = await follow_rate(pg.dsn, url, 10)
            catch_up = await catch_up_rate(url, 10, "0")
        # retention on a database of its own: only old events before the writer's new ones
        admin = await asyncpg.connect(pg.dsn)
        try:
            await admin.execute("CREATE DATABASE bench_retention")
        finally:
            await admin.close()
        retention_dsn = pg.dsn.rsplit("/", 1)[0] + "/bench_retention"
        await migrate(retention_dsn)
        delete_rate, commit_median, commit_worst = await retention_figures(retention_dsn)

    checks = [
        (
            f"commit-to-SSE latency over {len(lat):,} single-event commits: median "
            f"{statistics.median(lat) * 1000:.1f} ms, p99 {pct(lat, 0.99) * 1000:.1f} ms "
            f"(target < 100 ms, < 500 ms)",
            statistics.median(lat) < 0.1 and pct(lat, 0.99) < 0.5,
        ),
        (
            f"events/s following the head, 1 client: {one[0]:,.0f} (writer committed "
            f"{wrote_one:,.0f}/s in 1,000-event transactions) (target ≥ 5,000)",
            min(one) >= 5000,
        ),
        (
            f"events/s following the head, each of 10 clients: min {min(ten):,.0f}, median "
            f"{statistics.median(ten):,.0f} (writer {wrote_ten:,.0f}/s) (target ≥ 5,000 each)",
            min(ten) >= 5000,
        ),
        (
            f"{IDLE_STREAMS:,} idle streams: feed process RSS {idle_rss:.0f} MB (before them "
            f"{base_rss:.0f} MB), {feed_conns} feed database connections ({all_conns} in all) "
            f"(target < 100 MB, ≤ 2)",
            idle_rss < 100 and feed_conns <= 2,
        ),
    ]
    print(
        f"{EVENTS:,} events per throughput run; feed server, clients, writer and PostgreSQL "
        f"(fsync on) share this machine's {os.cpu_count()} cores"
    )
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    print(
        f"  [info] catch-up from the start ({EVENTS:,} retained events, read from the database), "
        f"each of 10 clients: min {min(catch_up):,.0f}/s, median {statistics.median(catch_up):,.0f}/s"
    )
    print(
        f"  [info] retention: {delete_rate:,.0f} events/s deleted in batches of 2,000 while a "
        f"writer committed 10-event transactions: median commit {commit_median * 1000:.1f} ms, "
        f"worst {commit_worst * 1000:.1f} ms"
    )
    return SuiteResult("bench_feed", [Check("feed", text, ok) for text, ok in checks])


def main() -> SuiteResult:
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(0 if main().ok else 1)
