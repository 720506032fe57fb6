"""Where a sync's time goes: ``python -m bench.profile [--per N] [--py-spy] [--out DIR]``.

A first full sync, an idle re-sweep (after VACUUM ANALYZE) and a delta after 1% of the catalog
changed, each as `syncer sync --once` against `syncer simulate` (5 regions × 4 types × N) and a
durable embedded PostgreSQL started with ``pg_stat_statements``. After each step it prints the
CPU of every process over the step, and the statements by total time, grouped by their text
(every session's temp tables give the same text another query id). Then EXPLAIN (ANALYZE,
BUFFERS) of one unchanged page's prefilter.

With ``--py-spy`` (``pip install py-spy``), each sync runs under ``py-spy record --native`` and
leaves its samples in DIR/<step>.txt (collapsed stacks: flamegraph.pl or speedscope read them);
the frames with the most samples are printed, start-up imports left out. Samples of a process
that waits for a CPU count where it waits: on a busy machine ``send`` (waking a PostgreSQL
backend) looks costly; the CPU lines say what was really spent.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
from pathlib import Path

import asyncpg
import orjson

from bench.bench_sync import REGIONS, TYPES, sim_mutate
from bench.common import (
    CpuMeter,
    create_database,
    db_dsn,
    run_measured,
    simulator_process,
    sweep_seconds,
    sync_command,
    vacuum_analyze,
    write_config,
)
from bench.fetch import fetch_only
from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate
from syncer.store.pool import init_connection
from syncer.store.queries import sql

TOP_STATEMENTS = """
SELECT sum(calls) AS calls, sum(total_exec_time) AS ms, sum(rows) AS rows,
       sum(shared_blks_hit + shared_blks_read) AS buffers, sum(wal_bytes) AS wal,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 80) AS query
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
GROUP BY query ORDER BY 2 DESC LIMIT $1
"""


async def top_statements(dsn: str, n: int = 8) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(TOP_STATEMENTS, n)
        print(f"    {'calls':>6} {'ms':>9} {'rows':>9} {'buffers':>9} {'WAL bytes':>11}  statement")
        for r in rows:
            print(
                f"    {r['calls']:>6} {r['ms']:>9.0f} {r['rows']:>9} {r['buffers']:>9} "
                f"{int(r['wal']):>11}  {r['query']}"
            )
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


def top_frames(path: Path, n: int = 20) -> None:
    """The leaf frames with the most samples, each with the Python function it ran under."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        if any("importlib" in f for f in frames):
            continue  # start-up
        total += int(samples)
        python = [f for f in frames if ".py:" in f]
        owner = python[-1].split(" (")[0] if python else "?"
        counts[f"{owner} :: {frames[-1].split(' (')[0]}"] += int(samples)
    print(f"    py-spy: {total} samples after start-up; most sampled (Python function :: leaf):")
    for frame, samples in counts.most_common(n):
        print(f"    {100 * samples / max(total, 1):5.1f}%  {frame}")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"  # in the venv, not necessarily on PATH
    return str(beside) if beside.exists() else shutil.which("py-spy")


def run_step(meter: CpuMeter, label: str, command: list[str], spy: str | None, out: Path) -> None:
    if spy:
        raw = out / f"{label}.txt"
        command = [
            spy,
            "record",
            "-r",
            "200",
            "--native",
            "-f",
            "raw",
            "-o",
            str(raw),
            "--",
            *command,
        ]
    with meter.measure(label):
        m = run_measured(command)
    if m.returncode != 0:
        raise SystemExit(f"{label} failed: {m.stderr.strip().splitlines()[-3:]}")
    print(f"  {label}: command {m.seconds:.2f}s")
    print(f"    {meter.uses[label].line()}")
    if spy:
        top_frames(out / f"{label}.txt")


async def explain_prefilter(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await init_connection(conn)
        await conn.execute(sql("create_work_tables"))
        rows = await conn.fetch(
            "SELECT image_id, content_hash, created_at FROM ims.image_rows "
            "WHERE region = $1 AND image_type = 'private' AND deleted_at IS NULL "
            "ORDER BY created_at, image_id LIMIT 500",
            REGIONS[len(REGIONS) // 2],
        )
        args = (
            REGIONS[len(REGIONS) // 2],
            "private",
            orjson.dumps([r["image_id"] for r in rows]).decode(),
            b"".join(r["content_hash"] for r in rows),
            True,
            rows[0]["created_at"],
            rows[-1]["created_at"],
        )
        plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql("page_prefilter_range"), *args)
        print("  EXPLAIN (ANALYZE, BUFFERS) of an unchanged page's prefilter (500 images):")
        for r in plan:
            print(f"    {r[0]}")
    finally:
        await conn.close()


async def run(per: int, with_py_spy: bool, out: Path) -> None:
    spy = py_spy() if with_py_spy else None
    if with_py_spy and spy is None:
        raise SystemExit("--py-spy: py-spy is not installed (pip install py-spy)")
    settings = {"shared_preload_libraries": "pg_stat_statements"}
    with EmbeddedPostgres(durable=True, settings=settings) as pg:
        admin = pg.dsn
        conn = await asyncpg.connect(admin)
        await conn.execute("CREATE DATABASE bench_template")
        await conn.close()
        await migrate(db_dsn(admin, "bench_template"))
        conn = await asyncpg.connect(db_dsn(admin, "bench_template"))
        await conn.execute("CREATE EXTENSION pg_stat_statements")
        await conn.close()
        meter = CpuMeter(pg.pid)
        total = per * len(REGIONS) * len(TYPES)
        print(f"{total:,} images ({len(REGIONS)} regions × {len(TYPES)} types × {per:,})")
        with simulator_process(REGIONS, per) as sim:
            meter.simulator = sim.pid
            await fetch_only(sim.endpoint, REGIONS, TYPES)  # fills the render cache
            name = await create_database(admin, "bench_template")
            dsn = db_dsn(admin, name)
            config = write_config(dsn, sim.endpoint, REGIONS)
            passes = len(REGIONS) * len(TYPES)
            for label, mode in (
                ("first-sync", "full"),
                ("idle-resweep", "full"),
                ("delta", "delta"),
            ):
                if label == "idle-resweep":
                    await vacuum_analyze(dsn)
                if label == "delta":
                    print(f"  changed: {await sim_mutate(sim, total // 100, seed=0)}")
                conn = await asyncpg.connect(dsn)
                await conn.execute("SELECT pg_stat_statements_reset()")
                await conn.close()
                run_step(meter, label, sync_command(config, mode=mode), spy, out)
                seconds = await sweep_seconds(dsn, passes)
                print(f"    sweep {seconds:.2f}s = {total / seconds:,.0f} images/s listed")
                await top_statements(dsn)
            await explain_prefilter(dsn)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--per", type=int, default=10_000, help="images per partition")
    parser.add_argument("--py-spy", action="store_true", help="sample each sync with py-spy")
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args.per, args.py_spy, args.out))


if __name__ == "__main__":
    main()
