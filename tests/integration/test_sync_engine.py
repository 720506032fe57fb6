"""The sync engine end to end: simulator (with faults) → client → pager → PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from syncer.simulator import Catalog, FaultRule, Simulator
from syncer.store.pool import open_pool
from syncer.sync.partitions import Partition
from tests.sync_env import REGIONS, Env, FrozenClock, assert_db_equals_catalog


async def test_database_equals_catalog_despite_faults(env: Env) -> None:
    env.sim.faults.add(FaultRule("429", rate=0.15, delay=0.01))
    env.sim.faults.add(FaultRule("503", rate=0.1))
    env.sim.faults.add(FaultRule("drop", rate=0.05))
    results = await env.sync()
    assert all(r.outcome == "ok" for r in results), [r.error for r in results]
    await assert_db_equals_catalog(env)
    assert len(await env.events()) == 2 * 4 * 120


async def test_scripted_changes_yield_exactly_the_expected_events(env: Env) -> None:
    await env.sync()
    seen = await env.head()
    cat, region = env.sim.catalog, REGIONS[0]
    imgs = cat.images(region, "private")
    new = cat.create(region, "private", name="fresh upload")
    cat.set_status(region, imgs[0]["id"], "saving")
    cat.update(region, imgs[1]["id"], name="renamed")
    cat.set_status(region, imgs[2]["id"], "killed")
    cat.delete(region, imgs[3]["id"])
    cat.delete(region, imgs[4]["id"])
    # first sweep after the changes: the deletions are missed once, nothing tombstoned yet
    await env.sync()
    assert sorted(await env.events(after=seen)) == sorted(
        [
            (new["id"], "created", None, "queued"),
            (imgs[0]["id"], "status_changed", imgs[0]["status"], "saving"),
            (imgs[1]["id"], "updated", imgs[1]["status"], imgs[1]["status"]),
            (imgs[2]["id"], "status_changed", imgs[2]["status"], "killed"),
        ]
    )
    seen = await env.head()
    cat.set_status(region, new["id"], "saving")
    cat.set_status(region, new["id"], "active")
    await env.sync()  # second complete sweep: tombstones; one observation → one event
    assert sorted(await env.events(after=seen)) == sorted(
        [
            (new["id"], "status_changed", "queued", "active"),
            (imgs[3]["id"], "deleted", imgs[3]["status"], "deleted"),
            (imgs[4]["id"], "deleted", imgs[4]["status"], "deleted"),
        ]
    )
    await assert_db_equals_catalog(env)


async def test_unchanged_second_sweep_writes_nothing(env: Env) -> None:
    await env.sync()
    xid = await env.pool.fetchval("SELECT txid_current() % 4294967296")
    n_events = len(await env.events())
    results = await env.sync()
    assert all(r.outcome == "ok" and r.counts.written == 0 for r in results)
    assert (
        await env.pool.fetchval(
            "SELECT count(*) FROM ims.image_rows WHERE xmin::text::bigint > $1", xid
        )
        == 0
    )
    assert len(await env.events()) == n_events


async def test_failure_on_page_two_tombstones_nothing_there(env: Env) -> None:
    await env.sync()
    cat, region = env.sim.catalog, REGIONS[0]
    gone = [o["id"] for o in cat.images(region, "gold")[:5]]
    for image_id in gone:
        cat.delete(region, image_id)
    other_gone = cat.images(region, "private")[0]["id"]
    cat.delete(region, other_gone)
    env.sim.faults.add(FaultRule("500", region=region, image_type="gold", with_marker=True))
    for _ in range(3):  # more than delete_after_missed_sweeps
        results = {r.partition: r for r in await env.sync(api={"max_attempts": 2})}
    failed = results[Partition(region, "gold")]
    assert failed.outcome == "failed" and "500" in (failed.error or "")
    assert all(r.outcome == "ok" for p, r in results.items() if p != Partition(region, "gold"))
    live = await env.pool.fetchval(
        "SELECT count(*) FROM ims.current_images WHERE region = $1 AND image_id = ANY($2)",
        region,
        gone,
    )
    assert live == 5  # nothing tombstoned in the failing partition
    assert await env.pool.fetchval(
        "SELECT deleted_at IS NOT NULL FROM ims.images WHERE image_id = $1", other_gone
    )
    run = await env.pool.fetchrow(
        "SELECT outcome, error FROM ims.sync_runs WHERE region = $1 AND image_type = 'gold' ORDER BY id DESC LIMIT 1",
        region,
    )
    assert run["outcome"] == "failed" and "500" in run["error"]


@pytest.mark.parametrize(
    "options",
    [
        {"page_info": False},
        {"max_limit": 7},
        {"unknown_marker": "empty"},
        {"page_info": False, "max_limit": 13, "unknown_marker": "empty"},
    ],
)
async def test_paging_alternatives_still_give_the_whole_catalog(
    db: str, options: dict[str, Any]
) -> None:
    catalog = Catalog(regions=REGIONS, images_per_partition=60, seed=5)
    async with Simulator(catalog, **options) as sim:
        pool = await open_pool(db, size=6)
        try:
            env = Env(sim, pool, db)
            results = await env.sync()
            assert all(r.outcome == "ok" for r in results), [r.error for r in results]
            await assert_db_equals_catalog(env)
        finally:
            await pool.close()


async def test_marker_vanishing_mid_scan(env: Env) -> None:
    """Delete the image a scan's next marker points at between pages: the scan resumes."""
    region = REGIONS[0]
    cat = env.sim.catalog
    deleted: list[str] = []

    def delete_the_marker(query: list[tuple[str, str]]) -> None:
        marker = dict(query).get("marker")
        if marker and len(deleted) < 2 and cat.get(region, marker) is not None:
            deleted.append(marker)
            cat.delete(region, marker)

    env.sim.before_request = delete_the_marker  # type: ignore[attr-defined]
    results = await env.sync(partitions=[Partition(region, "private")])
    assert results[0].outcome == "ok", results[0].error
    assert len(deleted) == 2
    await assert_db_equals_catalog_partition(env, region, "private", ignore=set(deleted))


async def assert_db_equals_catalog_partition(
    env: Env, region: str, t: str, ignore: set[str]
) -> None:
    expected = {o["id"] for o in env.sim.catalog.images(region, t)}
    got = {
        r["image_id"]
        for r in await env.pool.fetch(
            "SELECT image_id FROM ims.current_images WHERE region = $1 AND image_type = $2",
            region,
            t,
        )
    }
    assert got - ignore == expected


async def test_delta_sees_changes_within_the_same_second(env: Env) -> None:
    clock = FrozenClock(env.sim.catalog)
    await env.sync()
    cat, region = env.sim.catalog, REGIONS[0]
    image = cat.images(region, "private")[0]
    clock.set(1_900_000_000)
    cat.update(region, image["id"], name="first")
    await env.sync("delta")
    cat.update(region, image["id"], name="second")  # same second as the previous poll
    await env.sync("delta")
    name = await env.pool.fetchval("SELECT name FROM ims.images WHERE image_id = $1", image["id"])
    assert name == "second"
    kinds = [e[1] for e in await env.events() if e[0] == image["id"]]
    assert kinds == ["created", "updated", "updated"]
    assert any("updated_at" in dict(q) for q in (r.query for r in env.sim.requests))


async def test_concurrent_sync_of_one_partition_is_busy(env: Env) -> None:
    env.sim.faults.add(FaultRule("slow", delay=0.2))
    first, second = await asyncio.gather(
        env.sync(partitions=[Partition(REGIONS[0], "gold")]),
        env.sync(partitions=[Partition(REGIONS[0], "gold")]),
    )
    outcomes = sorted([first[0].outcome, second[0].outcome])
    assert outcomes == ["busy", "ok"]
