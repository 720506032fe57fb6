"""Several `syncer run` replicas on one database: never two passes of a partition at once,
work spread over the live replicas, and a killed replica's partitions taken over (its open runs
closed) within a minute."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from syncer.simulator import Catalog, FaultRule, Simulator
from tests.daemon_env import (
    Daemon,
    assert_events_replay_to_the_state,
    daemon_for,
    overlapping_runs,
    until,
)

REGIONS = ["cn-north-4", "ap-southeast-1"]
PARTITIONS = 8


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    catalog = Catalog(regions=REGIONS, images_per_partition=120, seed=5)
    # slow pages: a pass lasts long enough to be caught running when the victim is killed
    slow = [FaultRule("slow", with_marker=True, delay=0.3)]
    async with Simulator(catalog, change_rate=0.2, seed=5, faults=slow) as s:
        yield s


@pytest.fixture
async def conn(db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db)
    yield c
    await c.close()


def replica(tmp_path: Path, db: str, sim: Simulator, name: str) -> Daemon:
    return daemon_for(tmp_path, db, sim, REGIONS, name, lease_ttl="3s")


@pytest.mark.parametrize("replicas", [2, 3])
async def test_replicas_share_the_partitions_and_take_over_a_killed_one(
    tmp_path: Path, db: str, sim: Simulator, conn: asyncpg.Connection, replicas: int
) -> None:
    daemons = [replica(tmp_path, db, sim, f"r{i}") for i in range(replicas)]
    for d in daemons:
        await d.start()
    try:
        for d in daemons:
            await d.wait_ready()
        await until(
            lambda: conn.fetchval(
                "SELECT count(DISTINCT (region, image_type)) FROM ims.sync_runs"
                " WHERE mode = 'full' AND outcome = 'ok'"
            ),
            40,
            "first sweeps",
        )
        await asyncio.sleep(6)
        workers = await conn.fetchval(
            "SELECT count(DISTINCT worker) FROM ims.sync_runs WHERE outcome = 'ok'"
        )
        assert workers == replicas, "work did not spread over every replica"

        victim = daemons[0]
        victim_worker = f"{socket.gethostname()}:{victim.pid}"
        # every answer slow for a moment: a pass the victim is seen running is still running
        # when it is killed (passes are quick; the kill must land inside one)
        hold = FaultRule("slow", delay=2.0)
        sim.faults.rules.append(hold)
        await until(
            lambda: conn.fetchval(
                "SELECT count(*) FROM ims.sync_runs WHERE outcome = 'running' AND worker = $1",
                victim_worker,
            ),
            30,
            "the victim running a pass",
            step=0.05,
        )
        killed_at = await conn.fetchval("SELECT clock_timestamp()")
        await victim.kill()
        sim.faults.rules.remove(hold)

        # its open runs closed (failed, replica gone) and every partition fully swept again
        await until(
            lambda: conn.fetchval(
                "SELECT count(*) = 0 FROM ims.sync_runs WHERE outcome = 'running' AND worker = $1",
                victim_worker,
            ),
            60,
            "the killed replica's runs closed",
        )
        await until(
            lambda: conn.fetchval(
                "SELECT count(DISTINCT (region, image_type)) = $2 FROM ims.sync_runs"
                " WHERE mode = 'full' AND outcome = 'ok' AND started_at > $1",
                killed_at,
                PARTITIONS,
            ),
            120,  # (a loaded 2-core machine; the run closure above is what has a deadline)
            "every partition swept by the survivors",
        )
        reaped = await conn.fetch(
            "SELECT error FROM ims.sync_runs WHERE worker = $1 AND outcome = 'failed'",
            victim_worker,
        )
        assert reaped and all(r["error"].startswith("replica gone") for r in reaped)
    finally:
        codes = [(await d.stop())[0] for d in daemons[1:]]
        if daemons[0].proc is not None and daemons[0].proc.returncode is None:
            await daemons[0].kill()
    assert codes == [0] * (replicas - 1)
    assert not await overlapping_runs(conn), "two passes of one partition at once"
    assert not await conn.fetchval("SELECT count(*) FROM ims.sync_runs WHERE outcome = 'running'")
    await assert_events_replay_to_the_state(conn)
