"""syncer against the naive path a user would write instead (issue 11, figure 6).

The naive path (bench/naive.py): Huawei's official SDK paging each image type sequentially with
``marker``, one ``INSERT … ON CONFLICT DO UPDATE`` per image, a commit per page. syncer: `syncer
sync --once` on the same work. Both sign their requests (AK/SK, the simulator verifies them),
both land the same typed rows in tables shaped like ``ims.image_rows`` (syncer also writes its
events and bookkeeping), against the same durable PostgreSQL and simulator: one region × 4 types
× 5,000 = 20,000 images (Huawei's SDK keeps only the host of an endpoint, so it reaches one
region of the simulator).

Three figures, medians of BENCH_REPEATS, naive and syncer runs interleaved:
first sync into an empty table; unchanged re-sync (after VACUUM ANALYZE, as for syncer's idle
re-sweep); first sync with 50 ms added to every listing answer (the simulator's ``slow`` fault
at rate 1, a WAN's round trip). Times are of the work itself: the naive loop, and syncer's
sweep (first pass start → last pass end in ``ims.sync_runs``); neither counts process start-up.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import orjson

from bench.common import (
    QUICK,
    REPEATS,
    Check,
    CpuMeter,
    SuiteResult,
    create_database,
    db_dsn,
    drop_database,
    median,
    run_measured,
    run_sync,
    simulator_process,
    sweep_seconds,
    vacuum_analyze,
    write_config,
)
from bench.fetch import client_only
from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate

REGION = "bench-naive"
TYPES = ("gold", "private", "shared", "market")
PER = int(os.environ.get("BENCH_NAIVE_PER_PARTITION", "1250" if QUICK else "5000"))
LATENCY = 0.05
CREDENTIALS = {
    "HUAWEICLOUD_SDK_AK": "AKBENCH0000000000001",
    "HUAWEICLOUD_SDK_SK": "bench-secret-key",
    "HUAWEICLOUD_SDK_PROJECT_ID": "0605767e5f0025bd2f81c00c2e9c0d30",
}
FIGURES = {
    "first": ("first sync", 3.0),
    "resync": ("unchanged re-sync", 10.0),
    "latency": (f"first sync, {LATENCY * 1000:.0f} ms per page", 5.0),
}


@dataclass
class Times:
    naive: list[float] = field(default_factory=list)
    syncer: list[float] = field(default_factory=list)
    syncer_cmd: list[float] = field(default_factory=list)
    naive_requests: int = 0


async def naive_run(meter: CpuMeter, label: str, base_url: str, dsn: str) -> tuple[float, int]:
    with meter.measure(label, client="naive"):
        m = run_measured(
            [sys.executable, "-m", "bench.naive", base_url, dsn, REGION, *TYPES], env=CREDENTIALS
        )
    if m.returncode != 0:
        raise SystemExit(f"naive sync failed: {m.stderr.strip().splitlines()[-3:]}")
    out = orjson.loads(m.stdout)
    assert out["images"] == PER * len(TYPES), out
    return float(out["seconds"]), int(out["requests"])


async def naive_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM naive_images"))
    finally:
        await conn.close()


async def run() -> SuiteResult:
    total = PER * len(TYPES)
    print(
        f"{total:,} images (1 region × {len(TYPES)} types × {PER:,}), AK/SK signed; naive: "
        f"Huawei's SDK, sequential marker paging, an upsert per image, a commit per page; "
        f"syncer: `syncer sync --once` (page_size 500, 4 partitions at a time); medians of "
        f"{REPEATS}",
        flush=True,
    )
    os.environ.update(CREDENTIALS)  # for syncer's client in this process (warm-up)
    times = {k: Times() for k in FIGURES}
    with EmbeddedPostgres(durable=True) as pg:
        admin = pg.dsn
        conn = await asyncpg.connect(admin)
        await conn.execute("CREATE DATABASE naive_template")
        await conn.close()
        await migrate(db_dsn(admin, "naive_template"))
        meter = CpuMeter(pg.pid)
        with simulator_process([REGION], PER, auth="aksk", env=CREDENTIALS) as sim:
            meter.simulator = sim.pid
            warm = write_config(
                "postgresql://unused@127.0.0.1:1/x", sim.endpoint, [REGION], auth="aksk"
            )
            await client_only(str(warm))  # fills the simulator's render cache

            async def one_round(latency: bool) -> None:
                names = ("latency",) if latency else ("first", "resync")
                for who in ("naive", "syncer"):
                    db = await create_database(admin, "naive_template")
                    dsn = db_dsn(admin, db)
                    label = f"{who} {FIGURES[names[0]][0]}"
                    if who == "naive":
                        s, n = await naive_run(meter, label, sim.base_url, dsn)
                        times[names[0]].naive.append(s)
                        times[names[0]].naive_requests = n
                        assert await naive_rows(dsn) == total
                    else:
                        config = write_config(dsn, sim.endpoint, [REGION], auth="aksk")
                        with meter.measure(label):
                            m = run_sync(config, env=CREDENTIALS)
                        times[names[0]].syncer.append(await sweep_seconds(dsn, len(TYPES)))
                        times[names[0]].syncer_cmd.append(m.seconds)
                    if not latency:
                        await vacuum_analyze(dsn)
                        label = f"{who} {FIGURES['resync'][0]}"
                        if who == "naive":
                            s, n = await naive_run(meter, label, sim.base_url, dsn)
                            times["resync"].naive.append(s)
                            times["resync"].naive_requests = n
                        else:
                            with meter.measure(label):
                                m = run_sync(config, env=CREDENTIALS)
                            times["resync"].syncer.append(await sweep_seconds(dsn, len(TYPES)))
                            times["resync"].syncer_cmd.append(m.seconds)
                    await drop_database(admin, db)

            for _ in range(REPEATS):
                await one_round(latency=False)
            rule = {"kind": "slow", "rate": 1.0, "delay": LATENCY}
            async with aiohttp.ClientSession() as s:
                async with s.post(sim.base_url + "/_sim/faults", json=rule) as r:
                    assert r.status == 201
                for _ in range(REPEATS):
                    await one_round(latency=True)
                async with s.delete(sim.base_url + "/_sim/faults") as r:
                    assert r.status == 200
    result = SuiteResult("bench_naive", cpu=meter.uses)
    for key, (what, target) in FIGURES.items():
        t = times[key]
        naive, syncer = median(t.naive), median(t.syncer)
        ratio = naive / syncer
        result.figures[key] = {
            "naive_s": t.naive,
            "naive_requests": t.naive_requests,
            "syncer_sweep_s": t.syncer,
            "syncer_command_s": t.syncer_cmd,
        }
        result.checks.append(
            Check(
                "6",
                f"vs naive, {what}: naive {naive:.2f}s ({total / naive:,.0f}/s), syncer "
                f"{syncer:.2f}s ({total / syncer:,.0f}/s; command {median(t.syncer_cmd):.2f}s)"
                f" = {ratio:.1f}× (target ≥ {target:g}×)",
                ratio >= target,
                {"ratio": round(ratio, 2), "naive_s": naive, "syncer_s": syncer},
            )
        )
    result.report(width=38)
    return result


def main() -> SuiteResult:
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(0 if main().ok else 1)
