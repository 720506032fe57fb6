"""Fault matrix rows for writes PostgreSQL refuses: a full disk and a statement timeout.

A full disk is simulated honestly at the level syncer sees it: PostgreSQL answers a write with
SQLSTATE 53100 (``disk_full``, "could not extend file … No space left on device"). A trigger
raises exactly that on the page transaction's LAST statement (the event INSERT), after its rows
were written — the worst moment: the test proves the rows go with the events (one transaction),
the pass fails with one line, and once space is back (the trigger dropped) the next sweep writes
every change with exactly one event. (What it does not simulate: the server itself failing to
write WAL at COMMIT, where PostgreSQL PANICs and restarts — that is the "PostgreSQL restarted
mid-sweep" row.) A statement timeout is real: a trigger makes the write outlast
``[database].statement_timeout``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from syncer.simulator import Catalog, Simulator
from syncer.sync.partitions import Partition
from tests.fault_checks import assert_no_harm, assert_recovered, before
from tests.sync_env import REGIONS, Env

REGION, TYPE = REGIONS[0], "private"
PARTITION = Partition(REGION, TYPE)
HARSH = {"delete_after_missed_sweeps": 1, "min_sweep_ratio": 0.0}

DISK_FULL = """
CREATE FUNCTION ims.test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'disk_full',
        MESSAGE = 'could not extend file "base/16384/16500": No space left on device';
END $$;
CREATE TRIGGER test_disk_full BEFORE INSERT ON ims.image_events
    FOR EACH STATEMENT EXECUTE FUNCTION ims.test_disk_full();
"""
SLOW_WRITE = """
CREATE FUNCTION ims.test_slow_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(3);
    RETURN NULL;
END $$;
CREATE TRIGGER test_slow_write BEFORE INSERT ON ims.image_events
    FOR EACH STATEMENT EXECUTE FUNCTION ims.test_slow_write();
"""
CURES = {
    "disk full": "DROP TRIGGER test_disk_full ON ims.image_events",
    "statement timeout": "DROP TRIGGER test_slow_write ON ims.image_events",
}


@pytest.fixture
async def env(db: str) -> AsyncIterator[Env]:
    catalog = Catalog(regions=[REGION], images_per_partition=30, seed=4, image_types=[TYPE])
    async with (
        Simulator(catalog) as sim,
        Env.open(sim, db, database={"statement_timeout": "1s"}) as env,
    ):
        yield env


@pytest.mark.parametrize(
    ("fault", "sql", "reason"),
    [
        ("disk full", DISK_FULL, "DiskFullError: could not extend file"),
        ("statement timeout", SLOW_WRITE, "a statement exceeded database.statement_timeout"),
    ],
    ids=["disk full", "statement timeout"],
)
async def test_a_refused_write_rolls_back_its_page_and_the_next_sweep_recovers(
    env: Env, fault: str, sql: str, reason: str
) -> None:
    [first] = await env.sync(partitions=[PARTITION], **HARSH)
    assert first.outcome == "ok", first.error
    was = await before(env.pool)
    cat = env.sim.catalog
    images = cat.images(REGION, TYPE)
    renamed, killed, deleted = images[2]["id"], images[12]["id"], images[22]["id"]
    cat.update(REGION, renamed, name="renamed")
    cat.set_status(REGION, killed, "killed")
    cat.delete(REGION, deleted)
    created = cat.create(REGION, TYPE, name="new")["id"]
    rows_before = await env.pool.fetch("SELECT image_id, raw FROM ims.image_rows ORDER BY 1")

    await env.pool.execute(sql)
    [faulted] = await env.sync(partitions=[PARTITION], **HARSH)
    assert faulted.outcome == "failed"
    assert faulted.error is not None and reason in faulted.error and "\n" not in faulted.error
    # every page that changed something failed at its event INSERT: no row changed either
    assert (
        await env.pool.fetch("SELECT image_id, raw FROM ims.image_rows ORDER BY 1") == rows_before
    )
    await assert_no_harm(env.pool, was, {o["id"] for o in cat.images(REGION, TYPE)})

    await env.pool.execute(CURES[fault])
    [recovered] = await env.sync(partitions=[PARTITION], **HARSH)
    expected = {
        renamed: "updated",
        killed: "status_changed",
        deleted: "deleted",
        created: "created",
    }
    await assert_recovered(env.pool, recovered, cat.images(REGION, TYPE), was, expected)
