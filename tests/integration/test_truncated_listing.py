"""A listing cut short never looks complete: a gateway or proxy that ends a listing early
(`page_info` without `next_marker` on a page that is not the last) cannot feed the absence
counter, sweep after sweep."""

from __future__ import annotations

from syncer.simulator import FaultRule
from syncer.sync.partitions import Partition
from tests.sync_env import REGIONS, Env, assert_db_equals_catalog

REGION = REGIONS[0]


async def test_a_listing_cut_on_every_sweep_tombstones_nothing(env: Env) -> None:
    await env.sync()
    gold = Partition(REGION, "gold")
    env.sim.faults.add(FaultRule("cut", region=REGION, image_type="gold", with_marker=True))
    for _ in range(3):  # more than delete_after_missed_sweeps
        [result] = await env.sync(partitions=[gold])
        assert result.outcome == "ok", result.error
        assert result.counts.images_seen == 120
    assert env.sim.fired["cut"] >= 3
    assert not await env.pool.fetchval(
        "SELECT count(*) FROM ims.image_events WHERE kind = 'deleted'"
    )
    await assert_db_equals_catalog(env)


async def test_a_delta_cut_short_does_not_move_past_what_it_missed(env: Env) -> None:
    await env.sync()
    gold = Partition(REGION, "gold")
    for image in env.sim.catalog.images(REGION, "gold"):
        env.sim.catalog.update(REGION, image["id"], name="renamed")
    env.sim.faults.add(FaultRule("cut", region=REGION, image_type="gold", with_marker=True))
    [delta] = await env.sync("delta", partitions=[gold])
    assert delta.outcome == "ok" and delta.counts.updated == 120
    env.sim.faults.clear()
    await assert_db_equals_catalog(env)
