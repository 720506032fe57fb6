"""The page writer against a real PostgreSQL: writes only what changed, one event per change."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from syncer.errors import PagingError
from syncer.records import digest_page
from syncer.store.leases import THIS_PROCESS, Replica
from syncer.store.passes import PartitionBusy, partition_pass
from syncer.store.pool import open_pool

REGION, TYPE = "cn-north-4", "private"


def image(n: int, **over: Any) -> dict[str, Any]:
    obj = {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "name": f"img-{n} 镜像",
        "status": "active",
        "visibility": "private",
        "owner": "tenant",
        "__os_type": "Linux",
        "__platform": "CentOS",
        "__os_version": "CentOS 7.3 64bit",
        "__os_bit": "64",
        "disk_format": "zvhd2",
        "container_format": "bare",
        "min_ram": 1024,
        "min_disk": 40,
        "size": 0,
        "__image_size": "1073741824",
        "virtual_env_type": "FusionCompute",
        "protected": False,
        "tags": ["a=b"],
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "active_at": "2024-01-01T00:01:00Z",
        "virtual_size": None,
        "__future_field": {"x": [1, 2]},
    }
    obj.update(over)
    return obj


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await open_pool(db, size=4)
    yield p
    await p.close()


async def sweep(
    pool: asyncpg.Pool, pages: list[list[dict[str, Any]]], mode: str = "full", threshold: int = 2
) -> Any:
    async with partition_pass(pool, REGION, TYPE, mode) as p:  # type: ignore[arg-type]
        for page in pages:
            await p.apply_page(digest_page(page))
        if mode == "full":
            await p.complete_full_sweep(
                missed_sweeps_to_delete=threshold, min_ratio=0.5, covered_from=p.started_at
            )
        else:
            await p.complete_delta(covered_from=p.started_at)
        return p


async def events(pool: asyncpg.Pool, after: int = 0) -> list[tuple[Any, ...]]:
    """The events after seq ``after`` (see ``head``)."""
    rows = await pool.fetch(
        "SELECT image_id, kind, old_status, new_status, changes FROM ims.image_events"
        " WHERE seq > $1 ORDER BY seq",
        after,
    )
    return [
        (
            r["image_id"][-3:],
            r["kind"],
            r["old_status"],
            r["new_status"],
            orjson.loads(r["changes"]),
        )
        for r in rows
    ]


async def head(pool: asyncpg.Pool) -> int:
    """The newest event's seq: what came before is left out of ``events(pool, after=...)``."""
    return int(await pool.fetchval("SELECT coalesce(max(seq), 0) FROM ims.image_events"))


async def row_versions(pool: asyncpg.Pool) -> dict[str, str]:
    return {
        r["image_id"]: r["v"]
        for r in await pool.fetch(
            "SELECT image_id, xmin::text || ctid::text AS v FROM ims.image_rows"
        )
    }


async def test_first_sweep_stores_every_field_and_creates_events(pool: asyncpg.Pool) -> None:
    page = [image(i) for i in range(1, 6)]
    p = await sweep(pool, [page[:3], page[3:]])
    assert (p.counts.pages, p.counts.images_seen, p.counts.created) == (2, 5, 5)
    rows = await pool.fetch("SELECT * FROM ims.current_images ORDER BY image_id")
    assert [orjson.loads(r["raw"]) for r in rows] == page
    r = rows[0]
    assert (
        r["region"],
        r["image_type"],
        r["name"],
        r["os_type"],
        r["platform"],
        r["min_ram"],
        r["image_size"],
    ) == (REGION, TYPE, "img-1 镜像", "Linux", "CentOS", 1024, 1073741824)
    assert r["tags"] == ["a=b"] and r["protected"] is False and r["created_at"].year == 2024
    assert r["last_seen_at"] is not None and r["deleted_at"] is None
    assert [e[1] for e in await events(pool)] == ["created"] * 5
    run = await pool.fetchrow("SELECT * FROM ims.sync_runs")
    assert (run["outcome"], run["pages"], run["images_seen"], run["created"], run["worker"]) == (
        "ok",
        2,
        5,
        5,
        THIS_PROCESS.worker,
    )


async def test_unchanged_sweep_writes_nothing(pool: asyncpg.Pool) -> None:
    page = [image(i) for i in range(1, 6)]
    await sweep(pool, [page])
    before, n_events = await row_versions(pool), len(await events(pool))
    p = await sweep(pool, [copy.deepcopy(page)])
    assert p.counts.written == 0 and p.counts.events == 0
    assert await row_versions(pool) == before
    assert len(await events(pool)) == n_events


async def test_reordered_keys_are_not_a_change(pool: asyncpg.Pool) -> None:
    """The hash is of the bytes as sent: other bytes, same object → a row write, no event."""
    page = [image(i) for i in range(1, 6)]
    await sweep(pool, [page])
    n_events = len(await events(pool))
    shuffled = [dict(reversed(list(o.items()))) for o in page]
    p = await sweep(pool, [shuffled])
    assert p.counts.events == 0 and len(await events(pool)) == n_events
    assert p.counts.written == 5  # the new hashes are remembered ...
    p = await sweep(pool, [shuffled])
    assert p.counts.written == 0  # ... so the same bytes again cost nothing


async def test_each_change_is_exactly_one_event(pool: asyncpg.Pool) -> None:
    page = [image(i) for i in range(1, 6)]
    await sweep(pool, [page])
    later = "2024-01-02T00:00:00Z"
    changed = copy.deepcopy(page)
    changed[0].update(status="saving", updated_at=later)  # status_changed
    changed[1].update(name="renamed", updated_at=later)  # updated
    changed[2].update(status="deleted", updated_at=later)  # deleted (listed as deleted)
    del changed[3]["__future_field"]  # updated (field removed)
    changed.append(image(6, status="queued"))  # created
    seen = await head(pool)
    await sweep(pool, [changed])
    got = await events(pool, after=seen)
    assert got == [
        (
            "001",
            "status_changed",
            "active",
            "saving",
            {"status": ["active", "saving"], "updated_at": ["2024-01-01T00:00:00Z", later]},
        ),
        (
            "002",
            "updated",
            "active",
            "active",
            {"name": ["img-2 镜像", "renamed"], "updated_at": ["2024-01-01T00:00:00Z", later]},
        ),
        (
            "003",
            "deleted",
            "active",
            "deleted",
            {"status": ["active", "deleted"], "updated_at": ["2024-01-01T00:00:00Z", later]},
        ),
        ("004", "updated", "active", "active", {"__future_field": [{"x": [1, 2]}, None]}),
        ("006", "created", None, "queued", {}),
    ]
    assert await pool.fetchval("SELECT count(*) FROM ims.current_images") == 5


async def test_absence_tombstones_after_enough_complete_sweeps_and_restores(
    pool: asyncpg.Pool,
) -> None:
    page = [image(i) for i in range(1, 6)]
    await sweep(pool, [page])
    seen = await head(pool)
    await sweep(pool, [page[1:]])  # missed once: nothing yet
    assert await events(pool, after=seen) == []
    row = await pool.fetchrow(
        "SELECT last_seen_at, deleted_at FROM ims.images WHERE image_id = $1", page[0]["id"]
    )
    assert row["deleted_at"] is None and row["last_seen_at"] is not None
    await sweep(pool, [page[1:]])  # missed twice: tombstone
    assert await events(pool, after=seen) == [("001", "deleted", "active", "deleted", {})]
    assert await pool.fetchval("SELECT count(*) FROM ims.current_images") == 4
    assert await pool.fetchval("SELECT count(*) FROM ims.images") == 5
    await sweep(pool, [page])  # listed again: restored
    assert (await events(pool))[-1] == ("001", "restored", "deleted", "active", {})
    assert await pool.fetchval("SELECT count(*) FROM ims.current_images") == 5


async def test_absence_counted_right_beside_listed_deletions_and_newcomers(
    pool: asyncpg.Pool,
) -> None:
    """The sweep skips its anti-join only when nothing can be missing: a listed deletion, a new
    tombstone and a newcomer on the same sweep as a real absence must not hide the absence."""
    page = [image(i) for i in range(1, 6)]
    await sweep(pool, [page])
    later = "2024-01-02T00:00:00Z"
    for _ in range(2):
        listed = [
            image(2, status="deleted", updated_at=later),  # known, listed as deleted
            *page[2:],
            image(7),  # new
            image(8, status="deleted"),  # new, and already deleted
        ]  # image 1 is absent
        await sweep(pool, [listed])
    tombstoned = await pool.fetch(
        "SELECT right(image_id, 1) AS n FROM ims.images WHERE deleted_at IS NOT NULL ORDER BY 1"
    )
    assert [r["n"] for r in tombstoned] == ["1", "2", "8"]
    assert [e[0] for e in await events(pool) if e[1] == "deleted"] == ["002", "008", "001"]


async def test_seen_again_resets_the_miss_count(pool: asyncpg.Pool) -> None:
    page = [image(i) for i in range(1, 4)]
    await sweep(pool, [page])
    await sweep(pool, [page[1:]])  # missed once
    await sweep(pool, [page])  # seen: count resets, no event
    await sweep(pool, [page[1:]])  # missed once again: still alive
    assert await pool.fetchval("SELECT count(*) FROM ims.current_images") == 3
    assert [e[1] for e in await events(pool)] == ["created"] * 3


async def test_sweep_far_below_the_partition_tombstones_nothing(pool: asyncpg.Pool) -> None:
    page = [image(i) for i in range(1, 11)]
    await sweep(pool, [page])
    for _ in range(3):
        p = await sweep(pool, [page[:2]], threshold=1)
    assert await pool.fetchval("SELECT count(*) FROM ims.current_images") == 10
    assert p.note and "saw 2 images but the partition holds 10" in p.note
    assert "min_sweep_ratio" in await pool.fetchval(
        "SELECT note FROM ims.sync_runs ORDER BY id DESC LIMIT 1"
    )


async def test_failed_pass_is_recorded_and_tombstones_nothing(pool: asyncpg.Pool) -> None:
    page = [image(i) for i in range(1, 6)]
    await sweep(pool, [page], threshold=1)
    with pytest.raises(PagingError):
        async with partition_pass(pool, REGION, TYPE, "full") as p:
            await p.apply_page(digest_page(page[:1]))
            raise PagingError("listing broke on page 2")
    run = await pool.fetchrow(
        "SELECT outcome, error, pages FROM ims.sync_runs ORDER BY id DESC LIMIT 1"
    )
    assert (run["outcome"], run["error"], run["pages"]) == ("failed", "listing broke on page 2", 1)
    assert await pool.fetchval("SELECT count(*) FROM ims.current_images") == 5


async def test_one_pass_per_partition(pool: asyncpg.Pool) -> None:
    async with partition_pass(pool, REGION, TYPE, "full", replica=Replica()):
        with pytest.raises(PartitionBusy):
            async with partition_pass(pool, REGION, TYPE, "delta", replica=Replica()):
                pass
        async with partition_pass(pool, REGION, "gold", "full", replica=Replica()):
            pass  # another partition is free


async def test_orphaned_running_row_is_closed(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO ims.sync_runs (region, image_type, mode, worker) VALUES ($1, $2, 'full', 'gone:1')",
        REGION,
        TYPE,
    )
    async with partition_pass(pool, REGION, TYPE, "delta"):
        pass
    rows = await pool.fetch("SELECT worker, outcome, error FROM ims.sync_runs ORDER BY id")
    assert rows[0]["outcome"] == "failed" and "gone:1" in rows[0]["error"]
    assert rows[1]["outcome"] == "ok"


async def test_delta_never_tombstones_and_moves_watermark_to_its_start(
    pool: asyncpg.Pool,
) -> None:
    page = [image(i) for i in range(1, 4)]
    await sweep(pool, [page])
    # an image stamped far ahead does not drag the watermark along (only a completed pass
    # moves it, to where its listing began)
    newer = [image(2, name="x", updated_at="2099-03-01T00:00:00Z")]
    p = await sweep(pool, [newer], mode="delta")
    assert await pool.fetchval("SELECT count(*) FROM ims.current_images") == 3
    wm = await pool.fetchval("SELECT watermark FROM ims.partitions")
    assert wm == p.started_at


async def test_a_duplicate_id_cannot_hide_an_absence(pool: asyncpg.Pool) -> None:
    """seen counts distinct ids: an id listed twice counts once, so the count-based shortcut (live −
    seen = 0 → nothing missing) cannot skip the anti-join while an image is in fact absent."""
    await sweep(pool, [[image(i) for i in range(1, 6)]])
    again = [[image(1), image(2), image(3)], [image(3), image(4)]]  # 3 twice, 5 absent
    for _ in range(2):
        p = await sweep(pool, again)
        assert p.counts.images_seen == 5
    assert (
        await pool.fetchval("SELECT image_id FROM ims.images WHERE deleted_at IS NOT NULL")
        == image(5)["id"]
    )
