"""A value that does not fit its column never fails its partition.

What cannot be typed becomes NULL in its column while `raw` keeps what the API sent; a
character PostgreSQL cannot store (NUL, a lone surrogate) is replaced by U+FFFD and noted; the
count of such images is in `ims.sync_runs.unfit`. An unchanged re-sync then writes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from syncer.config import ApiSettings
from syncer.ims.client import ImsClient
from syncer.records import digest_page
from syncer.store.passes import partition_pass
from syncer.store.pool import open_pool
from syncer.sync.engine import PassResult
from syncer.sync.partitions import Partition
from tests.sync_env import REGIONS, Env

REGION = REGIONS[0]

ODD_VALUES: dict[str, Any] = {
    "min_ram": "²",  # "²".isdigit() is True, int("²") raises
    "min_disk": "١٢",  # Arabic-Indic digits: not what the column means by a number
    "size": 2**63,  # beyond bigint
    "protected": "yes",  # a string for a boolean
    "tags": "a,b",  # a string for a list
    "active_at": "not a time",
    "__os_bit": 64,  # a number for a string
    "name": "nul\x00inside",  # NUL: PostgreSQL stores it in neither text nor jsonb
}


async def test_odd_values_are_stored_as_null_and_counted(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    await env.sync()
    image_id = env.sim.catalog.images(REGION, "private")[7]["id"]
    env.sim.catalog.update(REGION, image_id, **ODD_VALUES)
    caplog.set_level(logging.WARNING, "syncer")

    results = await env.sync()
    assert all(r.outcome == "ok" for r in results), [r.error for r in results]
    row = await env.pool.fetchrow(
        "SELECT name, min_ram, min_disk, size, protected, tags, active_at, os_bit, raw"
        " FROM ims.images WHERE region = $1 AND image_id = $2",
        REGION,
        image_id,
    )
    assert row["name"] == "nul\ufffdinside"
    assert [row[k] for k in ("min_ram", "min_disk", "size", "protected", "tags")] == [None] * 5
    assert row["active_at"] is None and row["os_bit"] is None
    raw = orjson.loads(row["raw"])
    assert {k: raw[k] for k in ODD_VALUES if k != "name"} == {
        k: v for k, v in ODD_VALUES.items() if k != "name"
    }
    assert raw["name"] == "nul\ufffdinside"

    unfit = await env.pool.fetchval(
        "SELECT unfit FROM ims.sync_runs WHERE region = $1 AND image_type = 'private'"
        " ORDER BY id DESC LIMIT 1",
        REGION,
    )
    assert unfit == 1
    logged = [r for r in caplog.records if getattr(r, "image_id", None) == image_id]
    assert logged and "min_ram" in logged[0].fields  # type: ignore[attr-defined]
    assert await env.pool.fetchval(
        "SELECT count(*) FROM ims.image_events WHERE image_id = $1 AND kind = 'updated'", image_id
    )

    # unchanged re-sync: no row write, no event
    xid = await env.pool.fetchval("SELECT txid_current() % 4294967296")
    events = await env.pool.fetchval("SELECT count(*) FROM ims.image_events")
    again = await env.sync()
    assert all(r.outcome == "ok" and r.counts.written == 0 for r in again)
    assert await env.pool.fetchval("SELECT count(*) FROM ims.image_events") == events
    assert not await env.pool.fetchval(
        "SELECT count(*) FROM ims.image_rows WHERE xmin::text::bigint > $1", xid
    )


async def test_a_lone_surrogate_is_replaced_and_noted(db: str) -> None:
    """A lone UTF-16 surrogate is valid to lenient JSON decoders but not UTF-8: it is replaced
    (both fast decoders refuse the answer; the last-resort decoder keeps the page)."""
    body = (
        b'{"images":[{"id":"s1","name":"bad \\ud800 name","status":"active",'
        b'"created_at":"2024-01-01T00:00:00Z","updated_at":"2024-01-01T00:00:00Z"}],'
        b'"page_info":{}}'
    )
    page = ImsClient(ApiSettings())._parse_page(body, None, region="r", partition="r/private")
    pool = await open_pool(db, size=2)
    try:
        async with partition_pass(pool, "r", "private", "full") as p:
            await p.apply_page(digest_page(page.images))
            assert p.counts.unfit == 1
        row = await pool.fetchrow("SELECT name, raw FROM ims.images WHERE image_id = 's1'")
    finally:
        await pool.close()
    assert row["name"] == "bad \ufffd name"
    assert orjson.loads(row["raw"])["name"] == "bad \ufffd name"


class ExplodingProgress:
    """A progress reporter with a bug on one partition's pages."""

    def started(self, partition: Partition, mode: str) -> None:
        pass

    def page(self, partition: Partition, counts: Any) -> None:
        if partition == Partition(REGION, "market"):
            raise RuntimeError("a bug in a progress reporter")

    def finished(self, result: PassResult) -> None:
        pass


async def test_an_unexpected_exception_fails_only_its_own_pass(env: Env) -> None:
    results = {r.partition: r for r in await env.sync(progress=ExplodingProgress())}
    broken = results.pop(Partition(REGION, "market"))
    assert broken.outcome == "failed"
    assert "internal error: RuntimeError: a bug in a progress reporter" in (broken.error or "")
    assert all(r.outcome == "ok" for r in results.values())
    run = await env.pool.fetchrow(
        "SELECT outcome, error FROM ims.sync_runs WHERE region = $1 AND image_type = 'market'",
        REGION,
    )
    assert run["outcome"] == "failed"
    assert run["error"] == "internal error: RuntimeError: a bug in a progress reporter"
