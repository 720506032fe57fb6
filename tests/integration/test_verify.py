"""The replay check (`syncer verify`): the event log folded over the state finds exactly the rows,
and every way the two can drift apart is caught — a row or an event changed, an event lost or
doubled, a tombstone without its event — while retention's missing prefix is not a difference."""

from __future__ import annotations

import asyncio
import copy
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from syncer.records import digest_page
from syncer.store.passes import partition_pass
from syncer.store.pool import open_pool
from syncer.store.verify import verify_replay

REGION, TYPE = "cn-north-4", "private"
LATER = "2024-01-02T00:00:00Z"


def image(n: int, **over: Any) -> dict[str, Any]:
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "name": f"img-{n}",
        "status": "active",
        "min_ram": 1024,
        "tags": ["a=b"],
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
    } | over


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    # as the sync's sessions run (jit off: see syncer/store/pool.py)
    p = await open_pool(db, size=4, server_settings={"application_name": "syncer", "jit": "off"})
    yield p
    await p.close()


async def sweep(pool: asyncpg.Pool, page: list[dict[str, Any]], *, threshold: int = 1) -> None:
    async with partition_pass(pool, REGION, TYPE, "full") as p:
        await p.apply_page(digest_page(page))
        await p.complete_full_sweep(
            missed_sweeps_to_delete=threshold, min_ratio=0.0, covered_from=p.started_at
        )


async def history(pool: asyncpg.Pool) -> None:
    """Every kind of event: created, updated (a field changed, added, removed), status_changed,
    deleted by absence and by listing, restored, first seen deleted; images 1-9."""
    page = [image(i) for i in range(1, 8)]
    await sweep(pool, page)
    changed = copy.deepcopy(page)
    changed[0].update(name="renamed", updated_at=LATER)  # 1: updated
    changed[1].update(status="saving", updated_at=LATER)  # 2: status_changed
    changed[2]["extra"] = {"new": [1, 2]}  # 3: a field added
    del changed[3]["tags"]  # 4: a field removed
    changed[4].update(status="deleted")  # 5: deleted by listing
    changed.append(image(8, status="deleted"))  # 8: first seen deleted
    changed.append(image(9))  # 9: created
    await sweep(pool, [o for o in changed if o["id"] != page[5]["id"]])  # 6: deleted by absence
    again = copy.deepcopy(changed)
    again[0].update(name="renamed twice", min_ram=2048)  # 1: updated again
    again[1].update(status="active")  # 2: status back
    again[4].update(status="active", name="back")  # 5: restored
    await sweep(pool, again)  # 6: restored (listed again, unchanged)


@pytest.fixture
async def synced(pool: asyncpg.Pool) -> asyncpg.Pool:
    await history(pool)
    kinds = {r["kind"] for r in await pool.fetch("SELECT kind FROM ims.image_events")}
    assert kinds == {"created", "updated", "status_changed", "deleted", "restored"}
    report = await verify_replay(pool)
    assert report.ok, report.lines()
    assert report.images == 9 and report.events == 19
    return pool


def iid(n: int) -> str:
    return image(n)["id"]


# Each corruption, and a phrase of the difference it must produce.
CORRUPTIONS: list[tuple[str, str, str]] = [
    (
        "a row's status changed",
        f"UPDATE ims.image_rows SET status = 'killed' WHERE image_id = '{iid(2)}'",
        "status 'killed', but the events end in 'active'",
    ),
    (
        "a field an event names changed in the row",
        f"UPDATE ims.image_rows SET raw = raw || '{{\"name\": \"tampered\"}}' WHERE image_id = '{iid(1)}'",
        "field 'name' is \"tampered\", but event",
    ),
    (
        "a field added to a row without an event naming it, then named",
        f"UPDATE ims.image_rows SET raw = raw - 'extra' WHERE image_id = '{iid(3)}'",
        "field 'extra' is null, but event",
    ),
    (
        "a tombstone without its deleted event",
        f"UPDATE ims.image_rows SET deleted_at = now(), status = 'deleted' WHERE image_id = '{iid(7)}'",
        "tombstoned (deleted_at set), but the last event is created",
    ),
    (
        "a live row whose last event is deleted",
        f"UPDATE ims.image_rows SET deleted_at = NULL, status = 'active' WHERE image_id = '{iid(8)}'",
        "live (deleted_at null), but the last event is deleted",
    ),
    (
        "an event lost in the middle",
        f"DELETE FROM ims.image_events WHERE image_id = '{iid(1)}' AND kind = 'updated'"
        f" AND changes ? 'min_ram'",
        "field 'name' is \"renamed twice\", but event",
    ),
    (
        "a status event lost",
        f"DELETE FROM ims.image_events WHERE image_id = '{iid(2)}' AND new_status = 'saving'",
        "old status 'saving', but event",
    ),
    (
        "an event doubled",
        "INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status, changes)"
        f" SELECT region, image_id, kind, old_status, new_status, changes FROM ims.image_events"
        f" WHERE image_id = '{iid(1)}' AND kind = 'updated' AND changes ? 'min_ram'",
        "field 'name': old value \"renamed\", but event",
    ),
    (
        "a creation doubled",
        "INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status, changes)"
        f" SELECT region, image_id, kind, old_status, new_status, changes FROM ims.image_events"
        f" WHERE image_id = '{iid(7)}'",
        "created again",
    ),
    (
        "a deletion doubled",
        "INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status, changes)"
        f" VALUES ('{REGION}', '{iid(8)}', 'deleted', 'deleted', 'deleted', '{{}}')",
        "deleted event after deleted",
    ),
    (
        "a row without any event",
        f"DELETE FROM ims.image_events WHERE image_id = '{iid(7)}'",
        "a row without any event",
    ),
    (
        "an image's first events lost",
        f"DELETE FROM ims.image_events WHERE image_id = '{iid(2)}' AND kind = 'created'",
        "the first event is status_changed, not its creation",
    ),
    (
        "events of an image without a row",
        "INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status)"
        f" VALUES ('{REGION}', 'ghost', 'created', NULL, 'active')",
        "events of an image without a row",
    ),
    (
        "a change that is not a pair",
        "INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status, changes)"
        f" VALUES ('{REGION}', '{iid(9)}', 'updated', 'active', 'active', '{{\"name\": \"x\"}}')",
        "field 'name': the change is \"x\", not [old, new]",
    ),
    (
        "an update that names nothing",
        "INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status)"
        f" VALUES ('{REGION}', '{iid(9)}', 'updated', 'active', 'active')",
        "updated event that names no field",
    ),
    (
        "a restore of a live image",
        "INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status)"
        f" VALUES ('{REGION}', '{iid(9)}', 'restored', 'active', 'active')",
        "restored after created",
    ),
]


class Undo(Exception):
    pass


@pytest.mark.no_replay_check("corrupts the log or the rows on purpose (each case rolled back)")
async def test_each_corruption_is_caught(synced: asyncpg.Pool) -> None:
    async with synced.acquire() as conn:
        for case, corruption, expected in CORRUPTIONS:
            with pytest.raises(Undo):
                async with conn.transaction():
                    await conn.execute(corruption)
                    report = await verify_replay(conn)
                    assert not report.ok, case
                    assert any(expected in str(d) for d in report.differences), (
                        case,
                        expected,
                        report.lines(),
                    )
                    assert len(report.summary().splitlines()) == 1
                    raise Undo
            assert (await verify_replay(conn)).ok, case


@pytest.mark.no_replay_check("corrupts a row on purpose, at its end")
async def test_retention_leaves_only_what_the_kept_events_determine(synced: asyncpg.Pool) -> None:
    """Retention removes a prefix: images whose creation (or every event) is gone are checked
    only against what is left, and nothing is reported about what it removed."""
    cut = await synced.fetchval(
        "SELECT seq FROM ims.image_events WHERE image_id = $1 AND kind = 'status_changed'"
        " ORDER BY seq LIMIT 1",
        iid(2),
    )
    await synced.execute(
        "WITH gone AS (DELETE FROM ims.image_events WHERE seq <= $1 RETURNING seq)"
        " UPDATE ims.feed_meta SET pruned_through = $1",
        cut,
    )
    report = await verify_replay(synced)
    assert report.ok, report.lines()
    assert report.pruned_through == cut and report.oldest_seq is not None
    assert "retention removed through" in report.summary()
    # what is left is still checked
    await synced.execute("UPDATE ims.image_rows SET status = 'queued' WHERE image_id = $1", iid(2))
    report = await verify_replay(synced)
    assert [d.image_id for d in report.differences] == [iid(2)], report.lines()


@pytest.mark.no_replay_check("corrupts the rows on purpose")
async def test_the_report_counts_everything_and_shows_the_first(synced: asyncpg.Pool) -> None:
    await synced.execute("UPDATE ims.image_rows SET status = 'weird'")
    report = await verify_replay(synced, show=3)
    assert report.total >= 9 and len(report.differences) == 3
    lines = report.lines()
    assert lines[0] == report.summary() and lines[-1].endswith(f"{report.total - 3} more")


async def test_an_empty_database_agrees(pool: asyncpg.Pool) -> None:
    report = await verify_replay(pool)
    assert report.ok and (report.images, report.events) == (0, 0)


@pytest.mark.no_replay_check("corrupts a row on purpose")
async def test_syncer_verify_exit_status_and_one_line(
    synced: asyncpg.Pool, db: str, tmp_path: Path
) -> None:
    config = tmp_path / "syncer.toml"
    config.write_text(f'[database]\ndsn = "{db}"\n[sync]\nregions = ["{REGION}"]\n')
    done = await run_cli(config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "the event log replays to the state (9 images, 19 events)"

    await synced.execute("UPDATE ims.image_rows SET status = 'killed' WHERE image_id = $1", iid(2))
    done = await run_cli(config)
    assert done.returncode == 3, (done.stdout, done.stderr)
    first, *rest = done.stdout.strip().splitlines()
    assert first == (
        "the event log does not replay to the state: 1 difference (9 images, 19 events)"
    )
    assert rest == [
        f"  {REGION}/{iid(2)} (event 17): status 'killed', but the events end in 'active'"
    ]
    assert "Traceback" not in done.stderr


async def test_syncer_verify_on_an_unmigrated_database_is_one_line(
    empty_db: str, tmp_path: Path
) -> None:
    config = tmp_path / "syncer.toml"
    config.write_text(f'[database]\ndsn = "{empty_db}"\n[sync]\nregions = ["{REGION}"]\n')
    done = await run_cli(config)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "syncer: database schema not migrated: run `syncer migrate` first"
    ]


async def run_cli(config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "HUAWEICLOUD_"))}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "syncer", "--config", str(config), "verify"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
