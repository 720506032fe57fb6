"""The reporting views (docs/sql.md) against a catalog synced by real passes with a scripted
history (conftest.py): every number checked against the simulator's catalog or the script."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from syncer.simulator import Catalog
from tests.integration.reporting.conftest import (
    FAILING,
    IMAGE_TYPES,
    IMAGES_PER_PARTITION,
    REGION,
    SEED,
    Played,
)
from tests.sync_env import REGIONS


@pytest.fixture
async def conn(played: Played) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(played.dsn)
    try:
        yield conn
    finally:
        await conn.close()


def api_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


async def test_reporting_views_answer_from_the_synced_catalog(
    played: Played, conn: asyncpg.Connection
) -> None:
    s = played.scenario
    catalog = s.catalog
    fetch = conn.fetch

    # live images per region, type, platform and OS: exactly the catalog's groups
    expected_groups: Counter[tuple[object, ...]] = Counter()
    expected_active: Counter[tuple[object, ...]] = Counter()
    expected_bytes: Counter[tuple[object, ...]] = Counter()
    for region, t, o in catalog:
        key = (region, t, o.get("__platform"), o.get("__os_type"), o.get("__os_version"))
        expected_groups[key] += 1
        expected_active[key] += o["status"] == "active"
        expected_bytes[key] += int(o["__image_size"])
    rows = await fetch("SELECT * FROM ims.live_image_counts")
    got = {
        (r["region"], r["image_type"], r["platform"], r["os_type"], r["os_version"]): r
        for r in rows
    }
    assert len(got) == len(rows)
    assert {k: r["images"] for k, r in got.items()} == dict(expected_groups)
    assert {k: r["active_images"] for k, r in got.items()} == dict(expected_active)
    assert {k: r["image_size_bytes"] for k, r in got.items()} == dict(expected_bytes)
    assert sum(expected_groups.values()) == 2 * 4 * IMAGES_PER_PARTITION + 3 - 1

    # killed: the scripted failure (seen saving, then killed) and the one generated killed
    killed = {r["image_id"]: r for r in await fetch("SELECT * FROM ims.killed_images")}
    generated_killed = {o["id"] for _, _, o in catalog if o["status"] == "killed"} - {s.killed}
    assert len(generated_killed) == 1
    assert set(killed) == {s.killed} | generated_killed
    assert killed[s.killed]["status_before"] == "saving"
    assert killed[s.killed]["killed_seen_at"] is not None
    assert killed[s.killed]["name"] == "upload that fails"
    (first_seen_killed,) = generated_killed
    assert killed[first_seen_killed]["status_before"] is None  # first seen already killed

    # in progress: the stuck upload and the generated one queued since long ago
    in_progress = {r["image_id"]: r for r in await fetch("SELECT * FROM ims.images_in_progress")}
    queued_long_ago = {o["id"] for _, _, o in catalog if o["status"] in ("queued", "saving")} - {
        s.stuck
    }
    assert len(queued_long_ago) == 1
    assert set(in_progress) == {s.stuck} | queued_long_ago
    stuck = in_progress[s.stuck]
    assert stuck["status"] == "saving"
    saving_event_at = await conn.fetchval(
        "SELECT occurred_at FROM ims.image_events WHERE image_id = $1 AND new_status = 'saving'",
        s.stuck,
    )
    assert stuck["status_seen_at"] == saving_event_at
    assert stuck["in_status_since"] <= saving_event_at
    assert timedelta(0) < stuck["in_status_for"] < timedelta(minutes=5)
    (old,) = queued_long_ago
    old_obj = next(o for _, _, o in catalog if o["id"] == old)
    assert in_progress[old]["in_status_since"] == api_time(old_obj["updated_at"])  # 2019..2024
    assert in_progress[old]["in_status_for"] > timedelta(days=365)

    # stuck: the threshold decides
    def stuck_ids(rows: list[object]) -> set[str]:
        return {r["image_id"] for r in rows}  # type: ignore[index]

    assert stuck_ids(await fetch("SELECT * FROM ims.stuck_images()")) == {old}  # 1 hour
    assert stuck_ids(await fetch("SELECT * FROM ims.stuck_images('1 millisecond')")) == {
        old,
        s.stuck,
    }
    assert stuck_ids(await fetch("SELECT * FROM ims.stuck_images('100 years')")) == set()
    ordered = await fetch("SELECT image_id FROM ims.stuck_images('0 seconds')")
    assert [r["image_id"] for r in ordered] == [old, s.stuck]  # longest first

    # deleted: the vanished gold image, tombstoned by the third (second complete missing) sweep
    deleted = await fetch("SELECT * FROM ims.recently_deleted")
    assert [r["image_id"] for r in deleted] == [s.deleted]
    gone = deleted[0]
    assert (gone["region"], gone["image_type"]) == (REGION, "gold")
    assert gone["deleted_because"] == "missed_sweeps"
    assert gone["status_before"] == "active"
    assert gone["deleted_by_run_id"] == s.tombstoning_run_id
    assert gone["last_seen_at"] < gone["deleted_at"]
    tombstoning_run = await conn.fetchrow(
        "SELECT region, image_type, mode, deleted FROM ims.sync_runs WHERE id = $1",
        s.tombstoning_run_id,
    )
    assert tuple(tombstoning_run) == (REGION, "gold", "full", 1)
    assert [dict(r) for r in await fetch("SELECT * FROM ims.deleted_images")] == [dict(gone)]
    await conn.execute(
        "UPDATE ims.image_rows SET deleted_at = now() - interval '8 days' WHERE image_id = $1",
        s.deleted,
    )
    assert await fetch("SELECT * FROM ims.recently_deleted") == []
    assert len(await fetch("SELECT * FROM ims.deleted_images")) == 1


async def test_transitions_and_partitions(played: Played, conn: asyncpg.Connection) -> None:
    s = played.scenario
    catalog = s.catalog
    rows = await conn.fetch(
        "SELECT region, image_type, kind, old_status, new_status, sum(transitions) AS n "
        "FROM ims.status_transitions_daily GROUP BY 1, 2, 3, 4, 5"
    )
    got = {tuple(r)[:5]: r["n"] for r in rows}
    # every image ever listed was created once (the deleted one included); the rename is no
    # transition; the scripted ones are
    first = Catalog(regions=REGIONS, images_per_partition=IMAGES_PER_PARTITION, seed=SEED)
    created = Counter(
        (region, t, "created", None, o["status"])
        for region in REGIONS
        for t in IMAGE_TYPES
        for o in first.images(region, t)
    )
    created[(REGION, "private", "created", None, "queued")] += 3
    expected = dict(created) | {
        (REGION, "private", "status_changed", "queued", "saving"): 3,
        (REGION, "private", "status_changed", "saving", "active"): 1,
        (REGION, "private", "status_changed", "saving", "killed"): 1,
        (REGION, "gold", "deleted", "active", "deleted"): 1,
    }
    assert got == expected
    today = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
    days = {r[0] for r in await conn.fetch("SELECT day FROM ims.status_transitions_daily")}
    assert days <= {today, today - timedelta(days=1)}  # a run across midnight UTC

    # freshness: every partition, its live images, three complete sweeps, a delta last
    fresh = {
        (r["region"], r["image_type"]): r
        for r in await conn.fetch("SELECT * FROM ims.partition_freshness")
    }
    assert set(fresh) == {(region, t) for region in REGIONS for t in IMAGE_TYPES}
    live = Counter((region, t) for region, t, _ in catalog)
    assert {k: r["live_images"] for k, r in fresh.items()} == dict(live)
    for key, r in fresh.items():
        failing = key == (FAILING.region, FAILING.image_type)
        assert r["complete_sweeps"] == 3
        assert r["last_full_sweep_at"] is not None and r["full_sweep_age"] > timedelta(0)
        assert r["last_run_mode"] == "delta"
        assert r["last_run_outcome"] == ("failed" if failing else "ok")
        assert r["failing"] is failing
        assert (r["last_delta_at"] is None) is failing
        assert r["running_since"] is None
        assert r["last_ok_at"] is not None
        assert r["last_run_worker"]

    # failing: only the partition that failed twice since its last success
    (failing,) = await conn.fetch("SELECT * FROM ims.failing_partitions")
    assert (failing["region"], failing["image_type"]) == (FAILING.region, FAILING.image_type)
    assert failing["consecutive_failures"] == 2
    assert failing["last_failed_mode"] == "delta"
    assert "500" in failing["last_error"]
    assert failing["last_ok_at"] == fresh[(FAILING.region, FAILING.image_type)]["last_ok_at"]
    assert failing["last_ok_at"] < failing["failing_since"] < failing["last_failed_at"]
    # a pass running now shows as running; the failure streak ends with a success
    await conn.execute(
        "INSERT INTO ims.sync_runs (region, image_type, mode, worker) VALUES ($1, $2, 'full', 'w:1')",
        FAILING.region,
        FAILING.image_type,
    )
    row = await conn.fetchrow(
        "SELECT running_since, running_worker, last_run_outcome FROM ims.partition_freshness "
        "WHERE region = $1 AND image_type = $2",
        FAILING.region,
        FAILING.image_type,
    )
    assert row["running_since"] is not None and row["running_worker"] == "w:1"
    assert row["last_run_outcome"] == "failed"  # the running one has not finished
    await conn.execute(
        "UPDATE ims.sync_runs SET outcome = 'ok', finished_at = now() WHERE worker = 'w:1'"
    )
    assert await conn.fetch("SELECT * FROM ims.failing_partitions") == []
