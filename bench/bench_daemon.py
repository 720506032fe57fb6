"""The daemon at rest (issue: "The daemon"): the CPU an idle `syncer run` uses over 60 s with 8
partitions, after its first sweeps and with no pass due in that window. Target: under 1% of
one core.

`syncer run` in its own process against `syncer simulate` in another and an embedded
PostgreSQL; full sweeps every hour, deltas every two hours (each partition's first delta at a
random moment of its interval). The window starts once every partition's first full sweep has
ended; a window in which a pass started anyway is measured again (at most three times), and
the figure says how many passes fell in the window it reports.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil

from bench.common import Check, SuiteResult, free_port, simulator_process, wait_port
from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate

REGIONS = ["idle-1", "idle-2"]
PARTITIONS = len(REGIONS) * 4
WINDOW = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
TARGET = 0.01  # of one core


def config(dsn: str, endpoint: str, port: int) -> Path:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"syncer-idle-{os.getpid()}.toml"
    path.write_text(
        f'[database]\ndsn = "{dsn}"\n[api]\nendpoint = "{endpoint}"\nauth = "none"\n'
        f'[sync]\nregions = ["{REGIONS[0]}", "{REGIONS[1]}"]\nfull_interval = "1h"\n'
        f'delta_interval = "2h"\n[feed]\nlisten = "127.0.0.1:{port}"\n'
    )
    return path


async def first_sweeps_done(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FILTER (WHERE mode = 'full' AND outcome = 'ok') >= $1"
                " AND count(*) FILTER (WHERE outcome = 'running') = 0 FROM ims.sync_runs",
                PARTITIONS,
            )
            if done:
                return
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def passes_between(dsn: str, began: float, ended: float) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM ims.sync_runs WHERE started_at"
                " BETWEEN to_timestamp($1) AND to_timestamp($2)",
                began,
                ended,
            )
        )
    finally:
        await conn.close()


def cpu_seconds(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


async def measure(dsn: str, daemon: psutil.Process) -> tuple[float, int]:
    """Share of one core over one window, and the passes that started in it."""
    began_wall, began_cpu, began = time.time(), cpu_seconds(daemon), time.monotonic()
    await asyncio.sleep(WINDOW)
    used = cpu_seconds(daemon) - began_cpu
    share = used / (time.monotonic() - began)
    return share, await passes_between(dsn, began_wall, time.time())


def main() -> SuiteResult:
    with (
        EmbeddedPostgres(durable=True) as pg,
        simulator_process(REGIONS, 2000) as sim,
    ):
        asyncio.run(migrate(pg.dsn))
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "syncer",
                "--config",
                str(config(pg.dsn, sim.endpoint, port)),
                "run",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(port)
            asyncio.run(first_sweeps_done(pg.dsn))
            daemon = psutil.Process(proc.pid)
            for _attempt in range(3):
                share, passes = asyncio.run(measure(pg.dsn, daemon))
                if passes == 0:
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(40)
    check = Check(
        "daemon",
        f"idle daemon, {PARTITIONS} partitions, {WINDOW:.0f} s after its first sweeps: "
        f"{share * 100:.2f}% of one core ({passes} passes in the window) "
        f"(target < {TARGET * 100:.0f}%)",
        share < TARGET,
        {"cpu_share": round(share, 5), "passes": passes},
    )
    print(check.line())
    return SuiteResult("bench_daemon", [check])


if __name__ == "__main__":
    sys.exit(0 if main().ok else 1)
