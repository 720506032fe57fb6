"""One stalled writer must not stall everyone.

Event writers serialize on one transaction-level advisory lock held to COMMIT. A writer that
freezes between its INSERT and its COMMIT (a frozen replica, a lost network) would hold every
other writer on every replica. Every wait of a sync session is bounded (lock_timeout,
idle_in_transaction_session_timeout, statement_timeout, keepalives): a blocked pass fails with a
clear reason within the bound, and the next one succeeds once the stalled writer is gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from syncer.simulator import Catalog, FaultRule, Simulator
from syncer.store.passes import EVENT_LOCK_KEY
from syncer.store.pool import session_settings
from syncer.sync.partitions import Partition
from tests.sync_env import REGIONS, Env, assert_db_equals_catalog, make_settings


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(Catalog(regions=REGIONS, images_per_partition=60, seed=8)) as sim:
        yield sim


def change_every_partition(env: Env) -> None:
    for region in REGIONS:
        for t in ("gold", "private", "shared", "market"):
            first = env.sim.catalog.images(region, t)[0]
            env.sim.catalog.update(region, first["id"], name="changed")


async def test_the_event_lock_key_is_the_triggers(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        body = await conn.fetchval(
            "SELECT prosrc FROM pg_proc WHERE proname = 'serialize_event_writers'"
        )
    finally:
        await conn.close()
    assert f"pg_advisory_xact_lock({EVENT_LOCK_KEY})" in body


async def test_a_writer_holding_the_event_lock_fails_the_others_within_the_bound(
    sim: Simulator, db: str
) -> None:
    async with Env.open(sim, db, database={"lock_timeout": "1s"}) as env:
        await env.sync()
        change_every_partition(env)
        stuck = await asyncpg.connect(db)  # a writer that never commits
        try:
            tx = stuck.transaction()
            await tx.start()
            await stuck.execute("SELECT pg_advisory_xact_lock($1)", EVENT_LOCK_KEY)
            began = time.monotonic()
            blocked = await env.sync()
            elapsed = time.monotonic() - began
            await tx.rollback()
        finally:
            await stuck.close()
        assert all(r.outcome == "failed" for r in blocked)
        assert all("lock wait exceeded database.lock_timeout" in (r.error or "") for r in blocked)
        # 8 passes, 4 at a time, each blocked for about 1 s: far from hanging
        assert elapsed < 15, elapsed
        runs = await env.pool.fetch("SELECT outcome, error FROM ims.sync_runs WHERE id > 8")
        assert len(runs) == 8 and all(r["outcome"] == "failed" for r in runs)

        after = await env.sync()  # the stalled writer is gone
        assert all(r.outcome == "ok" for r in after), [r.error for r in after]
        await assert_db_equals_catalog(env)


async def test_a_frozen_writer_is_cut_off_by_the_server(sim: Simulator, db: str) -> None:
    """A replica frozen inside its transaction (as a syncer session, with the same idle bound)
    is ended by PostgreSQL itself: the others wait at most that long, then carry on."""
    database = {"lock_timeout": "20s", "idle_in_transaction_timeout": "1500ms"}
    async with Env.open(sim, db, database=database) as env:
        await env.sync()
        change_every_partition(env)
        # a replica's session, exactly as syncer configures them
        settings = make_settings(sim, db, database=database)
        frozen = await asyncpg.connect(db, server_settings=session_settings(settings.database))
        tx = frozen.transaction()
        await tx.start()
        await frozen.execute("SELECT pg_advisory_xact_lock($1)", EVENT_LOCK_KEY)
        began = time.monotonic()
        results = await env.sync()
        elapsed = time.monotonic() - began
        assert all(r.outcome == "ok" for r in results), [r.error for r in results]
        assert 1.0 < elapsed < 15, elapsed
        await asyncio.sleep(0.1)
        assert frozen.is_closed() or not await _alive(frozen)
        await frozen.close()
        await assert_db_equals_catalog(env)


async def _alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True


async def test_a_pass_whose_backend_is_killed_fails_cleanly_then_recovers(env: Env) -> None:
    region = REGIONS[0]
    private = Partition(region, "private")
    await env.sync()
    for image in env.sim.catalog.images(region, "private")[:80]:
        env.sim.catalog.update(region, image["id"], name="changed")
    env.sim.faults.add(FaultRule("slow", region=region, image_type="private", delay=0.4))
    task = asyncio.create_task(env.sync(partitions=[private]))
    for _ in range(100):  # the pass is under way
        if await env.pool.fetchval("SELECT count(*) FROM ims.sync_runs WHERE outcome = 'running'"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the pass did not start")
    # the server ends every syncer session (the pass's among them), as a restart would
    killed_sessions = await env.pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE application_name = 'syncer' AND pid <> pg_backend_pid()"
        " AND datname = current_database()"
    )
    assert killed_sessions >= 1
    [killed] = await task
    assert killed.outcome == "failed"
    assert "connection lost" in (killed.error or ""), killed.error
    run = await env.pool.fetchrow("SELECT outcome, error FROM ims.sync_runs ORDER BY id DESC")
    assert run["outcome"] == "failed" and "connection lost" in run["error"]

    env.sim.faults.clear()
    [again] = await env.sync(partitions=[private])
    assert again.outcome == "ok", again.error
    assert not await env.pool.fetchval(
        "SELECT count(*) FROM ims.sync_runs WHERE outcome = 'running'"
    )
    await assert_db_equals_catalog(env)
