"""The sync's figures against what the machine can do, at two scales (issue 11).

Every figure is measured in this one run, on this machine, against a durable (fsync on)
PostgreSQL and `syncer simulate`, each in its own process; the sync runs as
`syncer sync --once` (so its RSS and CPU are its own). Rates are of the sweep itself: first
pass start → last pass end, as ``ims.sync_runs`` records them (the command's ~0.6 s start-up is
shown beside). Medians of BENCH_REPEATS (3) runs.

1. first full sync vs raw COPY of the same rows (typed, hashed, ``copy_records_to_table``) into
   a table shaped like ``ims.image_rows`` (``LIKE … INCLUDING ALL``: the same indexes);
2. idle re-sweep (the catalog unchanged, the database vacuumed and analyzed in between as
   autovacuum would be in the hour between two sweeps) vs the serving limit: a fetch-only
   client (bench/fetch.py) with the same paging, page size and concurrency; rows written
   (``pg_stat_user_tables``), events and WAL bytes (``pg_current_wal_lsn``) over the re-sweep;
3. the first sync and the idle re-sweep at the large size vs the base size (5 regions ×
   4 types × 50,000 = 1,000,000 vs × 10,000 = 200,000), and peak RSS;
5. a delta poll after 1% of the images changed (``POST /_sim/mutate``: creations, status
   transitions, updates, deletions, spread over every partition) vs a full sweep landing the
   same changes (each on its own copy of the same database): time and requests.

The simulator's render cache holds the whole catalog, and one untimed fetch-only sweep fills it
before anything is measured, so the simulator serves both sizes at the same cost per page.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from bench.common import (
    MB,
    QUICK,
    REPEATS,
    RESULTS,
    Check,
    CpuMeter,
    SimulatorProcess,
    SuiteResult,
    Writes,
    create_database,
    db_dsn,
    drop_database,
    median,
    run_sync,
    simulator_process,
    sweep_seconds,
    vacuum_analyze,
    write_config,
    write_counters,
    writes_between,
)
from bench.fetch import Fetched, client_only, fetch_only
from syncer.records import COLUMNS, to_records
from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate

REGIONS = [f"bench-{i}" for i in range(1, 6)]
TYPES = ("gold", "private", "shared", "market")
PASSES = len(REGIONS) * len(TYPES)
BASE = int(os.environ.get("BENCH_PER_PARTITION", "2500" if QUICK else "10000"))
LARGE = int(os.environ.get("BENCH_LARGE_PER_PARTITION", "10000" if QUICK else "50000"))
CHANGED = 0.01  # share of the catalog changed before the delta poll

T_COPY, T_SERVE, T_SCALE, T_RSS, T_DELTA = 0.65, 0.70, 0.85, 200 * MB, 0.05
T_WAL = 1 * MB


@dataclass
class SizeFigures:
    images: int
    fetch: list[Fetched] = field(default_factory=list)
    client: list[Fetched] = field(default_factory=list)
    copy_rates: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)  # sweep seconds
    first_cmd: list[float] = field(default_factory=list)  # whole command seconds
    resweep: list[float] = field(default_factory=list)
    resweep_cmd: list[float] = field(default_factory=list)
    resweep_writes: list[Writes] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    delta: list[float] = field(default_factory=list)
    delta_requests: list[int] = field(default_factory=list)
    delta_writes: list[Writes] = field(default_factory=list)
    delta_changes: list[dict[str, int]] = field(default_factory=list)
    full: list[float] = field(default_factory=list)
    full_requests: list[int] = field(default_factory=list)

    def rate(self, seconds: list[float]) -> float:
        return self.images / median(seconds)

    def to_json(self) -> dict[str, Any]:
        def w(x: Writes) -> dict[str, Any]:
            return {"tuples": x.tuples, "wal_bytes": x.wal_bytes}

        return {
            "images": self.images,
            "fetch_only": [vars(f) for f in self.fetch],
            "syncer_fetch_path": [vars(f) for f in self.client],
            "raw_copy_rows_per_s": self.copy_rates,
            "first_sync_sweep_s": self.first,
            "first_sync_command_s": self.first_cmd,
            "idle_resweep_sweep_s": self.resweep,
            "idle_resweep_command_s": self.resweep_cmd,
            "idle_resweep_writes": [w(x) for x in self.resweep_writes],
            "peak_rss_bytes": self.rss,
            "delta_s": self.delta,
            "delta_requests": self.delta_requests,
            "delta_writes": [w(x) for x in self.delta_writes],
            "delta_changes": self.delta_changes,
            "full_after_changes_s": self.full,
            "full_after_changes_requests": self.full_requests,
        }


async def fetch_rows(endpoint: str) -> list[tuple[object, ...]]:
    """Every image of the catalog as the typed, hashed row the sync lands (region and type
    attached)."""
    import orjson

    objects: list[tuple[str, str, dict[str, object]]] = []
    async with aiohttp.ClientSession() as session:
        for region in REGIONS:
            for t in TYPES:
                marker = None
                while True:
                    params = {"__imagetype": t, "limit": "1000", "sort_key": "created_at"}
                    params["sort_dir"] = "asc"
                    if marker:
                        params["marker"] = marker
                    url = endpoint.replace("{region}", region) + "/v2/cloudimages"
                    async with session.get(url, params=params) as r:
                        page = orjson.loads(await r.read())["images"]
                    if not page:
                        break
                    objects.extend((region, t, obj) for obj in page)
                    marker = str(page[-1]["id"])
    records = to_records([o for *_, o in objects])
    return [(region, t, *rec) for (region, t, _), rec in zip(objects, records, strict=True)]


async def raw_copy(dsn: str, rows: list[tuple[object, ...]]) -> float:
    """Seconds to COPY ``rows`` into an empty table shaped like ims.image_rows."""
    from syncer.store.pool import connect

    conn = await connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_copy")
        await conn.execute("CREATE TABLE bench_copy (LIKE ims.image_rows INCLUDING ALL)")
        await conn.execute("CHECKPOINT")
        began = asyncio.get_running_loop().time()
        await conn.copy_records_to_table(
            "bench_copy", records=rows, columns=("region", "image_type", *COLUMNS)
        )
        seconds = asyncio.get_running_loop().time() - began
        await conn.execute("DROP TABLE bench_copy")
        return seconds
    finally:
        await conn.close()


async def sim_requests(sim: SimulatorProcess) -> int:
    async with aiohttp.ClientSession() as s, s.get(sim.base_url + "/_sim/stats") as r:
        return int((await r.json())["requests"])


async def sim_mutate(sim: SimulatorProcess, changes: int, seed: int) -> dict[str, int]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(sim.base_url + "/_sim/mutate", json={"changes": changes, "seed": seed}) as r,
    ):
        assert r.status == 200, await r.text()
        made: dict[str, int] = (await r.json())["by_kind"]
        return made


def say(text: str) -> None:
    print(f"  {text}", flush=True)


async def measure_size(admin: str, meter: CpuMeter, per: int, *, base: bool) -> SizeFigures:
    total = per * PASSES
    f = SizeFigures(total)
    tag = f"{total:,}"
    with simulator_process(REGIONS, per) as sim:
        meter.simulator = sim.pid
        warm = await fetch_only(sim.endpoint, REGIONS, TYPES)  # fills the render cache
        assert warm.images == total, (warm.images, total)
        for _ in range(REPEATS if base else 1):  # (at the large size: shown, not judged)
            with meter.measure(f"fetch-only {tag}", client="-", images=total):
                f.fetch.append(await fetch_only(sim.endpoint, REGIONS, TYPES))
        say(
            f"fetch-only {tag}: {median([x.rate for x in f.fetch]):,.0f} images/s "
            f"({f.fetch[0].requests} requests)"
        )
        if base:
            config = write_config("postgresql://unused@127.0.0.1:1/x", sim.endpoint, REGIONS)
            for _ in range(1):  # shown, not judged: where the re-sweep's time goes
                with meter.measure(f"syncer fetch path {tag}", client="-", images=total):
                    f.client.append(await client_only(str(config)))
            say(
                f"syncer's client + pager without the database {tag}: "
                f"{median([x.rate for x in f.client]):,.0f} images/s "
                f"({f.client[0].requests} requests)"
            )
            rows = await fetch_rows(sim.endpoint)
            assert len(rows) == total
            name = await create_database(admin, "bench_template")
            for _ in range(REPEATS):
                with meter.measure(f"raw COPY {tag}", client="-", images=total):
                    f.copy_rates.append(total / await raw_copy(db_dsn(admin, name), rows))
            await drop_database(admin, name)
            del rows
            say(f"raw COPY {tag}: {median(f.copy_rates):,.0f} rows/s")

        keep: str | None = None
        for r in range(REPEATS):
            name = await create_database(admin, "bench_template")
            dsn = db_dsn(admin, name)
            config = write_config(dsn, sim.endpoint, REGIONS)
            with meter.measure(f"first sync {tag}", images=total):
                m = run_sync(config)
            f.first.append(await sweep_seconds(dsn, PASSES))
            f.first_cmd.append(m.seconds)
            f.rss.append(m.peak_rss)
            await vacuum_analyze(dsn)
            before = await write_counters(dsn)
            with meter.measure(f"idle re-sweep {tag}", images=total):
                m = run_sync(config)
            f.resweep_writes.append(await writes_between(dsn, before, await write_counters(dsn)))
            f.resweep.append(await sweep_seconds(dsn, PASSES))
            f.resweep_cmd.append(m.seconds)
            f.rss.append(m.peak_rss)
            if base and r == REPEATS - 1:
                keep = name
            else:
                await drop_database(admin, name)
        say(
            f"first sync {tag}: {f.rate(f.first):,.0f} images/s (sweep {median(f.first):.1f}s, "
            f"command {median(f.first_cmd):.1f}s); idle re-sweep {f.rate(f.resweep):,.0f} "
            f"images/s (sweep {median(f.resweep):.2f}s, command {median(f.resweep_cmd):.2f}s); "
            f"peak RSS {max(f.rss) / MB:.0f} MB"
        )

        if keep is not None:
            await measure_delta(admin, meter, sim, f, keep)
    meter.simulator = None
    return f


async def measure_delta(
    admin: str, meter: CpuMeter, sim: SimulatorProcess, f: SizeFigures, chain: str
) -> None:
    """Each round: change 1% of the catalog; on two copies of the same synced database, a delta
    poll and a full sweep land the same changes. The full sweep's copy carries on."""
    changes = round(f.images * CHANGED)
    for r in range(REPEATS):
        f.delta_changes.append(await sim_mutate(sim, changes, seed=r))
        a = await create_database(admin, chain)
        b = await create_database(admin, chain)
        await drop_database(admin, chain)
        dsn_a, dsn_b = db_dsn(admin, a), db_dsn(admin, b)
        before = await write_counters(dsn_a)
        n0 = await sim_requests(sim)
        with meter.measure("delta after 1%"):
            run_sync(write_config(dsn_a, sim.endpoint, REGIONS), mode="delta")
        n1 = await sim_requests(sim)
        f.delta_writes.append(await writes_between(dsn_a, before, await write_counters(dsn_a)))
        f.delta.append(await sweep_seconds(dsn_a, PASSES))
        f.delta_requests.append(n1 - n0)
        with meter.measure("full sweep after 1%", images=f.images):
            run_sync(write_config(dsn_b, sim.endpoint, REGIONS))
        f.full_requests.append(await sim_requests(sim) - n1)
        f.full.append(await sweep_seconds(dsn_b, PASSES))
        await drop_database(admin, a)
        chain = b
    await drop_database(admin, chain)
    say(
        f"after {changes:,} changes ({f.delta_changes[0]}): delta {median(f.delta):.2f}s, "
        f"{median(f.delta_requests):.0f} requests; full sweep {median(f.full):.2f}s, "
        f"{median(f.full_requests):.0f} requests"
    )


def checks(base: SizeFigures, large: SizeFigures) -> list[Check]:
    out = []
    first, copy = base.rate(base.first), median(base.copy_rates)
    out.append(
        Check(
            "1",
            f"first full sync {base.images:,}: {first:,.0f} images/s vs raw COPY {copy:,.0f} "
            f"rows/s = {first / copy:.2f}× (target ≥ {T_COPY}×)",
            first / copy >= T_COPY,
            {"ratio": round(first / copy, 3), "sync_rate": first, "copy_rate": copy},
        )
    )
    resweep, serve = base.rate(base.resweep), median([x.rate for x in base.fetch])
    rows = max(w.image_rows for w in base.resweep_writes)
    events = max(w.events for w in base.resweep_writes)
    wal = max(w.wal_bytes for w in base.resweep_writes)
    book = max(w.bookkeeping for w in base.resweep_writes)
    out.append(
        Check(
            "2",
            f"idle re-sweep {base.images:,}: {resweep:,.0f} images/s vs fetch-only "
            f"{serve:,.0f} = {resweep / serve:.2f}×, {rows} image rows and {events} events "
            f"written, WAL {wal / 1024:,.0f} kB (and {book} bookkeeping rows: sync_runs, "
            f"partitions) (target ≥ {T_SERVE}×, 0, 0, < 1 MB)",
            resweep / serve >= T_SERVE and rows == 0 and events == 0 and wal < T_WAL,
            {
                "ratio": round(resweep / serve, 3),
                "resweep_rate": resweep,
                "fetch_rate": serve,
                "rows": rows,
                "events": events,
                "wal_bytes": wal,
                "bookkeeping_rows": book,
            },
        )
    )
    r_first = large.rate(large.first) / first
    r_re = large.rate(large.resweep) / resweep
    out.append(
        Check(
            "3",
            f"scale {large.images:,} vs {base.images:,}: first sync {large.rate(large.first):,.0f}"
            f" vs {first:,.0f}/s = {r_first:.2f}×; idle re-sweep "
            f"{large.rate(large.resweep):,.0f} vs {resweep:,.0f}/s = {r_re:.2f}× "
            f"(fetch-only {median([x.rate for x in large.fetch]):,.0f} vs {serve:,.0f}/s) "
            f"(target ≥ {T_SCALE}× both)",
            r_first >= T_SCALE and r_re >= T_SCALE,
            {"first_ratio": round(r_first, 3), "resweep_ratio": round(r_re, 3)},
        )
    )
    peak = max(large.rss)
    out.append(
        Check(
            "4",
            f"peak RSS {large.images:,}: {peak / MB:.0f} MB ({base.images:,}: "
            f"{max(base.rss) / MB:.0f} MB) (target ≤ {T_RSS // MB} MB)",
            peak <= T_RSS,
            {"peak_rss_mb": round(peak / MB, 1), "base_rss_mb": round(max(base.rss) / MB, 1)},
        )
    )
    delta, full = median(base.delta), median(base.full)
    events = median([w.events for w in base.delta_writes])
    out.append(
        Check(
            "5",
            f"delta after 1% changed ({round(base.images * CHANGED):,} of {base.images:,}): "
            f"{delta:.2f}s, {median(base.delta_requests):.0f} requests, {events:.0f} events vs a "
            f"full sweep landing the same changes {full:.2f}s, "
            f"{median(base.full_requests):.0f} requests = {delta / full:.1%} of its time "
            f"(target ≤ {T_DELTA:.0%})",
            delta / full <= T_DELTA,
            {"ratio": round(delta / full, 4), "delta_s": delta, "full_s": full},
        )
    )
    return out


async def run() -> SuiteResult:
    result = SuiteResult("bench_sync")
    print(
        f"catalogs {BASE * PASSES:,} and {LARGE * PASSES:,} images ({len(REGIONS)} regions × "
        f"{len(TYPES)} types × {BASE:,} / {LARGE:,}); page_size 500, 4 partitions at a time; "
        f"medians of {REPEATS}; simulator, PostgreSQL (durable) and syncer share this machine's "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    # Statements slower than 2 s have their plans logged (auto_explain, without ANALYZE: no
    # cost to the others); they are copied beside the results when there are any.
    slow = {
        "session_preload_libraries": "auto_explain",
        "auto_explain.log_min_duration": "2s",
    }
    with EmbeddedPostgres(durable=True, settings=slow) as pg:
        admin = pg.dsn
        conn = await asyncpg.connect(admin)
        await conn.execute("CREATE DATABASE bench_template")
        await conn.close()
        await migrate(db_dsn(admin, "bench_template"))
        meter = CpuMeter(pg.pid)
        base = await measure_size(admin, meter, BASE, base=True)
        large = await measure_size(admin, meter, LARGE, base=False)
        log = (pg.root / "postgres.log").read_text(errors="replace")
        if "duration:" in log:
            RESULTS.mkdir(exist_ok=True)
            kept = RESULTS / f"slow-plans-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.log"
            kept.write_text(log)
            say(f"statements over 2 s: their plans are in {kept}")
    result.checks = checks(base, large)
    result.figures = {"base": base.to_json(), "large": large.to_json()}
    result.cpu = meter.uses
    result.report(width=26)
    return result


def main() -> SuiteResult:
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(0 if main().ok else 1)
