"""The delta watermark only moves to a point that every listing provably covered.

Each test makes the kind of change the old per-page watermark lost (it rose to the newest
`updated_at` of each committed page): changes behind a failed sweep, changes to pages a slow
sweep had already read, and every change after an image stamped a day ahead. Each ends with
the database equal to the catalog after one more delta.
"""

from __future__ import annotations

from datetime import timedelta

from syncer.simulator import FaultRule
from syncer.sync.partitions import Partition
from tests.sync_env import REGIONS, Env, OffsetClock, assert_db_equals_catalog

REGION = REGIONS[0]
GOLD = Partition(REGION, "gold")


def first_and_last(env: Env) -> tuple[str, str]:
    """Ids of the partition's first image (page 1 of 3) and last one (page 3)."""
    images = env.sim.catalog.images(REGION, "gold")
    return images[0]["id"], images[-1]["id"]


async def test_a_delta_after_a_failed_sweep_catches_every_change(env: Env) -> None:
    await env.sync()
    clock = OffsetClock(env.sim.catalog)
    early, late = first_and_last(env)
    clock.offset = 10
    env.sim.catalog.update(REGION, late, name="changed on page 3")
    clock.offset = 20
    env.sim.catalog.update(REGION, early, name="changed on page 1")  # the newer change
    env.sim.faults.add(FaultRule("500", region=REGION, image_type="gold", with_marker=True))
    [failed] = await env.sync(partitions=[GOLD], api={"max_attempts": 1})
    assert failed.outcome == "failed" and failed.counts.pages == 1
    env.sim.faults.clear()

    [delta] = await env.sync("delta", partitions=[GOLD])
    assert delta.outcome == "ok"
    await assert_db_equals_catalog(env)


async def test_a_sweep_slower_than_the_overlap_loses_no_change(env: Env) -> None:
    """Changes to a page the sweep already read, then (later) to one it has yet to read."""
    await env.sync()
    clock = OffsetClock(env.sim.catalog)
    early, late = first_and_last(env)
    marker_requests = 0

    def change_during_the_sweep(query: list[tuple[str, str]]) -> None:
        nonlocal marker_requests
        q = dict(query)
        if q.get("__imagetype") != "gold" or "marker" not in q:
            return
        marker_requests += 1
        if marker_requests == 2:  # page 1 is read; page 3 is about to be
            clock.offset = 10
            env.sim.catalog.update(REGION, early, name="changed after its page was read")
            clock.offset = 20  # later than the overlap (0 s) allows for
            env.sim.catalog.update(REGION, late, name="changed before its page was read")

    env.sim.before_request = change_during_the_sweep  # type: ignore[attr-defined]
    [sweep] = await env.sync(partitions=[GOLD])
    env.sim.before_request = None  # type: ignore[attr-defined]
    assert sweep.outcome == "ok" and marker_requests >= 2

    [delta] = await env.sync("delta", partitions=[GOLD])
    assert delta.outcome == "ok"
    await assert_db_equals_catalog(env)


async def test_an_image_stamped_a_day_ahead_does_not_blind_later_deltas(env: Env) -> None:
    await env.sync()
    clock = OffsetClock(env.sim.catalog)
    early, late = first_and_last(env)
    clock.offset = timedelta(days=1).total_seconds()
    env.sim.catalog.update(REGION, early, name="stamped tomorrow")
    clock.offset = 0
    [first] = await env.sync("delta", partitions=[GOLD])
    assert first.outcome == "ok" and first.counts.updated == 1

    env.sim.catalog.update(REGION, late, name="changed today")
    [second] = await env.sync("delta", partitions=[GOLD])
    assert second.outcome == "ok"
    await assert_db_equals_catalog(env)
    watermark = await env.pool.fetchval(
        "SELECT watermark FROM ims.partitions WHERE region = $1 AND image_type = 'gold'", REGION
    )
    assert watermark <= await env.pool.fetchval("SELECT now()")
