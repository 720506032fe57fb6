"""`syncer run` as a subprocess against the simulator and a real database: it keeps the
database equal to a changing catalog, stops cleanly on SIGTERM, and recovers from SIGKILL."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncer.simulator import Catalog, FaultRule, Simulator
from tests.daemon_env import (
    Daemon,
    assert_events_replay_to_the_state,
    daemon_for,
    overlapping_runs,
    until,
)

REGIONS = ["cn-north-4", "ap-southeast-1"]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(Catalog(regions=REGIONS, images_per_partition=80, seed=21)) as s:
        yield s


@pytest.fixture
async def conn(db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db)
    yield c
    await c.close()


def daemon(tmp_path: Path, db: str, sim: Simulator, name: str = "d", **sync: object) -> Daemon:
    return daemon_for(tmp_path, db, sim, REGIONS, name, **sync)


async def db_equals_catalog(conn: asyncpg.Connection, sim: Simulator) -> bool:
    for region in REGIONS:
        for t in ("gold", "private", "shared", "market"):
            want = {o["id"]: o for o in sim.catalog.images(region, t)}
            rows = await conn.fetch(
                "SELECT image_id, raw FROM ims.current_images WHERE region = $1 AND image_type = $2",
                region,
                t,
            )
            if {r["image_id"]: orjson.loads(r["raw"]) for r in rows} != want:
                return False
    return True


async def scrape(d: Daemon) -> dict[str, float]:
    """Each sample name's sum over its labels."""
    status, body = await d.get("/metrics")
    assert status == 200
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


async def test_the_daemon_keeps_the_database_equal_to_a_changing_catalog(
    tmp_path: Path, db: str, sim: Simulator, conn: asyncpg.Connection
) -> None:
    d = await daemon(tmp_path, db, sim).start()
    try:
        await d.wait_ready()
        await until(lambda: db_equals_catalog(conn, sim), 40, "first sweeps")
        cat, region = sim.catalog, REGIONS[0]
        new = cat.create(region, "private", name="upload")
        victims = cat.images(region, "gold")[:4]
        await asyncio.sleep(1.5)
        cat.set_status(region, new["id"], "saving")
        cat.update(region, victims[0]["id"], name="renamed")
        cat.set_status(region, victims[1]["id"], "killed")
        cat.delete(region, victims[2]["id"])
        await asyncio.sleep(1.5)
        cat.set_status(region, new["id"], "active")
        await until(lambda: db_equals_catalog(conn, sim), 40, "changes synced")
        # the deletion is tombstoned by complete full sweeps (2 misses)
        await until(
            lambda: conn.fetchval(
                "SELECT deleted_at IS NOT NULL FROM ims.images WHERE image_id = $1",
                victims[2]["id"],
            ),
            40,
            "tombstone",
        )
        # /metrics parses as Prometheus text, and its counters move as work happens
        before = await scrape(d)
        await asyncio.sleep(3)
        after = await scrape(d)
        for name in (
            "syncer_passes_total",
            "syncer_images_seen_total",
            "syncer_ims_requests_total",
        ):
            assert after[name] > before[name] > 0, name
        assert after["syncer_events_total"] > 0
    finally:
        rc, _ = await d.stop()
    assert rc == 0, d.log()[-2000:]
    assert not await overlapping_runs(conn)
    assert not await conn.fetchval("SELECT count(*) FROM ims.sync_runs WHERE outcome = 'running'")
    await assert_events_replay_to_the_state(conn)
    kinds = dict(
        await conn.fetch(
            "SELECT kind, count(*) FROM ims.image_events WHERE image_id = ANY($1) GROUP BY 1",
            [new["id"], *(v["id"] for v in victims[:3])],
        )
    )
    # each created once, one rename, one deletion; the upload's two transitions and the kill
    # (the upload's may be one event: queued → active, if one pass saw both)
    assert (kinds["created"], kinds["updated"], kinds["deleted"]) == (4, 1, 1), kinds
    assert kinds["status_changed"] in (2, 3), kinds
    # one observation, one event: nothing about the untouched images after their creation
    untouched = victims[3]["id"]
    assert await conn.fetchval(
        "SELECT array_agg(kind) FROM ims.image_events WHERE image_id = $1", untouched
    ) == ["created"]


async def test_sigterm_during_slow_pages_exits_0_promptly_and_cleanly(
    tmp_path: Path, db: str, sim: Simulator, conn: asyncpg.Connection
) -> None:
    sim.faults.add(FaultRule("slow", with_marker=True, delay=3.0))
    d = await daemon(tmp_path, db, sim, full_interval="1h", delta_interval="1h").start()
    await d.wait_ready()
    await until(
        lambda: conn.fetchval("SELECT count(*) FROM ims.sync_runs WHERE outcome = 'running'"),
        30,
        "passes under way",
    )
    await asyncio.sleep(1)  # mid-sweep: first pages written, the next ones slow
    rc, seconds = await d.stop(signal.SIGTERM)
    assert rc == 0, d.log()[-2000:]
    assert seconds < 30
    runs = await conn.fetch("SELECT outcome, error FROM ims.sync_runs")
    assert runs and all(r["outcome"] != "running" for r in runs)
    assert any(r["error"] == "cancelled (shutdown)" for r in runs)
    # every row written has its event
    assert await conn.fetchval("SELECT count(*) FROM ims.image_rows") == await conn.fetchval(
        "SELECT count(*) FROM ims.image_events WHERE kind = 'created'"
    )
    assert not await conn.fetchval("SELECT count(*) FROM ims.partition_leases")
    assert not await conn.fetchval("SELECT count(*) FROM ims.replicas")
    await assert_events_replay_to_the_state(conn)
    # the next cycle recovers: a new daemon completes what the stopped one abandoned
    sim.faults.clear()
    again = await daemon(tmp_path, db, sim, name="again").start()
    try:
        await until(lambda: db_equals_catalog(conn, sim), 40, "consistent after the restart")
    finally:
        rc, _ = await again.stop()
    assert rc == 0
    await assert_events_replay_to_the_state(conn)


async def test_sigkill_mid_sweep_then_a_restart_closes_the_orphan(
    tmp_path: Path, db: str, sim: Simulator, conn: asyncpg.Connection
) -> None:
    sim.faults.add(FaultRule("slow", with_marker=True, delay=1.0))
    d = await daemon(tmp_path, db, sim, lease_ttl="30s").start()
    await d.wait_ready()
    await until(
        lambda: conn.fetchval("SELECT count(*) FROM ims.image_rows"), 30, "first pages written"
    )
    await d.kill()
    orphans = await conn.fetchval("SELECT count(*) FROM ims.sync_runs WHERE outcome = 'running'")
    assert orphans > 0
    sim.faults.clear()
    again = await daemon(tmp_path, db, sim, name="again", lease_ttl="30s").start()
    try:
        await again.wait_ready()
        # closed at once (its process is gone from this host), not after the 30 s lease
        await until(
            lambda: conn.fetchval(
                "SELECT count(*) = 0 FROM ims.sync_runs WHERE outcome = 'running' AND worker = $1",
                f"{socket.gethostname()}:{d.pid}",
            ),
            10,
            "orphaned runs closed",
        )
        await until(lambda: db_equals_catalog(conn, sim), 40, "consistent after restart")
    finally:
        rc, _ = await again.stop()
    assert rc == 0
    closed = await conn.fetch(
        "SELECT error FROM ims.sync_runs WHERE worker = $1 AND outcome = 'failed'",
        f"{socket.gethostname()}:{d.pid}",
    )
    assert closed and all("replica gone" in r["error"] for r in closed)
    await assert_events_replay_to_the_state(conn)


async def test_every_stale_partition_gets_its_start_up_sweep(
    tmp_path: Path, db: str, sim: Simulator, conn: asyncpg.Connection
) -> None:
    """With hourly full sweeps, the sweep due at start must not be lost behind a delta that
    took the partition first (deltas every second race it on every partition)."""
    d = await daemon(tmp_path, db, sim, full_interval="1h", delta_interval="1s").start()
    try:
        await d.wait_ready()
        await until(
            lambda: conn.fetchval(
                "SELECT count(DISTINCT (region, image_type)) = 8 FROM ims.sync_runs"
                " WHERE mode = 'full' AND outcome = 'ok'"
            ),
            60,
            "a complete full sweep of every partition",
        )
    finally:
        rc, _ = await d.stop()
    assert rc == 0, d.log()[-2000:]
