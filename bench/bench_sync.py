"""The sync engine's three figures (issue: "The sync engine", Performance):

1. first full sync of 200,000 simulated images (5 regions × 4 types) — at least half the rate of
   a raw COPY of the same rows into a same-shaped table, measured in the same run;
2. an immediate second sweep — at least 50,000 images/s with 0 rows written and 0 events;
3. peak RSS of the syncing process under 200 MB and not proportional to the catalog (the same
   sync over a catalog a quarter the size peaks at about the same RSS).

The sync runs as `syncer sync --once` in its own process (so its RSS is its own), against
`syncer simulate` in another process, and a durable (fsync on) embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import aiohttp
import asyncpg
import orjson

from bench.common import Measured, median, run_measured, simulator_process, write_config
from syncer.records import COLUMNS, to_records
from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate

REGIONS = [f"bench-{i}" for i in range(1, 6)]
TYPES = ("gold", "private", "shared", "market")
PER_PARTITION = int(os.environ.get("BENCH_PER_PARTITION", "10000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


async def fetch_all(endpoint: str) -> list[tuple[str, str, dict[str, object]]]:
    """Every image of the catalog as (region, image type, object)."""
    images: list[tuple[str, str, dict[str, object]]] = []
    async with aiohttp.ClientSession() as session:
        for region in REGIONS:
            for t in TYPES:
                marker = None
                while True:
                    params = {
                        "__imagetype": t,
                        "limit": "1000",
                        "sort_key": "created_at",
                        "sort_dir": "asc",
                    }
                    if marker:
                        params["marker"] = marker
                    async with session.get(
                        endpoint.replace("{region}", region) + "/v2/cloudimages", params=params
                    ) as r:
                        page = orjson.loads(await r.read())["images"]
                    if not page:
                        break
                    images.extend((region, t, obj) for obj in page)
                    marker = str(page[-1]["id"])
    return images


async def new_database(admin_dsn: str, template: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


async def raw_copy_rate(dsn: str, rows: list[tuple[object, ...]]) -> float:
    from syncer.store.pool import connect

    conn = await connect(dsn)
    try:
        await conn.execute("CREATE TABLE bench_copy (LIKE ims.image_rows INCLUDING ALL)")
        rates = []
        for _ in range(REPEATS):
            await conn.execute("TRUNCATE bench_copy")
            await conn.execute("CHECKPOINT")
            began = asyncio.get_running_loop().time()
            await conn.copy_records_to_table(
                "bench_copy", records=rows, columns=("region", "image_type", *COLUMNS)
            )
            rates.append(len(rows) / (asyncio.get_running_loop().time() - began))
        await conn.execute("DROP TABLE bench_copy")
        return median(rates)
    finally:
        await conn.close()


def sync_once(config: str) -> Measured:
    m = run_measured(
        [
            sys.executable,
            "-m",
            "syncer",
            "--config",
            config,
            "--log-format",
            "json",
            "sync",
            "--once",
        ]
    )
    if m.returncode != 0:
        raise SystemExit(f"sync failed (exit {m.returncode}): {m.stderr.strip().splitlines()[-1:]}")
    return m


async def writes_since(dsn: str, xid: int) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetchval(
            "SELECT count(*) FROM ims.image_rows WHERE xmin::text::bigint >= $1", xid
        )
        events = await conn.fetchval(
            "SELECT count(*) FROM ims.image_events WHERE xmin::text::bigint >= $1", xid
        )
        return int(rows), int(events)
    finally:
        await conn.close()


async def sweep_seconds(dsn: str, passes: int) -> float:
    """Seconds from the first pass's start to the last pass's end of the newest sweep, as
    ``ims.sync_runs`` records them (the sweep itself, without the command's start-up)."""
    conn = await asyncpg.connect(dsn)
    try:
        return float(
            await conn.fetchval(
                "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM "
                "(SELECT * FROM ims.sync_runs ORDER BY id DESC LIMIT $1) newest",
                passes,
            )
        )
    finally:
        await conn.close()


async def current_xid(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT txid_current() % 4294967296"))
    finally:
        await conn.close()


async def run() -> bool:
    total = PER_PARTITION * len(REGIONS) * len(TYPES)
    with EmbeddedPostgres(durable=True) as pg:
        admin = pg.dsn
        conn = await asyncpg.connect(admin)
        await conn.execute("CREATE DATABASE bench_template")
        await conn.close()
        await migrate(admin.rsplit("/", 1)[0] + "/bench_template")

        # 3. memory at a quarter of the catalog first (its own simulator)
        with simulator_process(REGIONS, PER_PARTITION // 4) as endpoint:
            small_db = await new_database(admin, "bench_template")
            small = sync_once(str(write_config(small_db, endpoint, REGIONS)))

        with simulator_process(REGIONS, PER_PARTITION) as endpoint:
            images = await fetch_all(endpoint)
            assert len(images) == total, (len(images), total)
            # the same rows the sync will land, typed and hashed, region and type attached
            rows = [
                (region, t, *rec)
                for (region, t, _), rec in zip(
                    images, to_records([o for *_, o in images]), strict=True
                )
            ]
            del images
            copy_db = await new_database(admin, "bench_template")
            copy_rate = await raw_copy_rate(copy_db, rows)
            del rows

            first: list[Measured] = []
            second: list[Measured] = []
            first_sweep: list[float] = []
            second_sweep: list[float] = []
            passes = len(REGIONS) * len(TYPES)
            second_writes: list[tuple[int, int]] = []
            for _ in range(REPEATS):
                dsn = await new_database(admin, "bench_template")
                config = str(write_config(dsn, endpoint, REGIONS))
                first.append(sync_once(config))
                first_sweep.append(await sweep_seconds(dsn, passes))
                xid = await current_xid(dsn)
                second.append(sync_once(config))
                second_sweep.append(await sweep_seconds(dsn, passes))
                second_writes.append(await writes_since(dsn, xid))

    first_rate = median([total / m.seconds for m in first])
    first_sweep_rate = median([total / s for s in first_sweep])
    second_rate = median([total / s for s in second_sweep])
    second_wall_rate = median([total / m.seconds for m in second])
    peak = max(m.peak_rss for m in first + second)
    ratio = first_rate / copy_rate
    rows_written = sum(w[0] for w in second_writes)
    events_written = sum(w[1] for w in second_writes)
    mb = 1024 * 1024
    checks = [
        (
            f"first full sync: {first_rate:,.0f} images/s (whole command; the sweep alone "
            f"{first_sweep_rate:,.0f}/s) vs raw COPY {copy_rate:,.0f} rows/s = {ratio:.2f}× "
            f"(target ≥ 0.50×)",
            ratio >= 0.5,
        ),
        (
            f"second sweep: {second_rate:,.0f} images/s (first pass start → last pass end in "
            f"ims.sync_runs; whole command incl. start-up {second_wall_rate:,.0f}/s), "
            f"{rows_written} rows written, {events_written} events (target ≥ 50,000/s, 0, 0)",
            second_rate >= 50_000 and rows_written == 0 and events_written == 0,
        ),
        (
            f"peak RSS: {peak / mb:.0f} MB for {total:,} images vs {small.peak_rss / mb:.0f} MB for "
            f"{total // 4:,} (target < 200 MB, not proportional)",
            peak < 200 * mb and peak < 1.5 * small.peak_rss,
        ),
    ]
    print(
        f"catalog {total:,} images ({len(REGIONS)} regions × {len(TYPES)} types), "
        f"medians of {REPEATS} runs of `syncer sync --once` (page_size 500, 4 partitions at a "
        f"time); simulator, PostgreSQL and syncer share this machine's {os.cpu_count()} cores"
    )
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")
    return all(ok for _, ok in checks)


def main() -> int:
    return 0 if asyncio.run(run()) else 1


if __name__ == "__main__":
    sys.exit(main())
