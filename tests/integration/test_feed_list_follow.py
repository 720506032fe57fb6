"""List then follow: a new consumer copies the current images page by page while the catalog
changes underneath (the real sync engine against the simulator), then follows the feed from the
first page's cursor — and ends with exactly the catalog."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from syncer.config import settings_from_mapping
from syncer.ims.backoff import Backoff
from syncer.ims.client import ImsClient
from syncer.simulator import Catalog, Simulator
from syncer.store.pool import open_pool
from syncer.sync.engine import run_passes
from syncer.sync.partitions import plan_partitions
from tests.feed_helpers import get_json, poll_all, serve
from tests.integration.test_feed_http import assert_one_line_error

REGION = "cn-north-4"
TYPES = ("gold", "private", "shared", "market")


def apply(model: dict[tuple[str, str], dict[str, Any]], event: dict[str, Any]) -> None:
    """What a consumer does with one event: every value in it is absolute (the new status, the
    new value of each changed field), so applying an event the copy already reflects is
    harmless."""
    key = (event["region"], event["image_id"])
    if event["kind"] == "deleted":
        model.pop(key, None)
        return
    image = model.setdefault(key, {"raw": None})
    image["status"] = event["new_status"]
    if image["raw"] is not None:
        for field, (_, new) in event["changes"].items():
            image["raw"][field] = new


async def test_list_then_follow_reproduces_a_changing_catalog(db: str) -> None:
    rng = random.Random(11)
    catalog = Catalog(regions=(REGION,), images_per_partition=20, seed=4)
    async with Simulator(catalog) as sim:
        settings = settings_from_mapping(
            {
                "database": {"dsn": db},
                "api": {"endpoint": sim.endpoint_template, "auth": "none", "page_size": 50},
                "sync": {"regions": [REGION], "delete_after_missed_sweeps": 1},
            },
            {},
            "<test>",
        )
        # The sync core's page write currently pays ~0.7 s of JIT compilation per page with a
        # change (enable_nestloop = off puts plan costs above jit_above_cost); reported. Off
        # here, for this database only, to keep the test quick.
        admin = await asyncpg.connect(db)
        try:
            name = await admin.fetchval("SELECT current_database()")
            await admin.execute(f'ALTER DATABASE "{name}" SET jit = off')
        finally:
            await admin.close()
        pool = await open_pool(db, size=4)
        try:
            fast = Backoff(base=0.01, cap=0.05, retry_after_cap=0.05)
            async with ImsClient(settings.api, settings.credentials, backoff=fast) as client:

                async def sync() -> None:
                    results = await run_passes(
                        pool, client, plan_partitions(settings), "full", settings
                    )
                    assert all(r.outcome == "ok" for r in results)

                def change() -> None:
                    """A creation, a rename, a status change and a deletion, anywhere."""
                    live = [o["id"] for t in TYPES for o in catalog.images(REGION, t)]
                    victim = rng.choice(live)
                    catalog.update(REGION, victim, name=f"renamed-{rng.random():.6f}")
                    victim = rng.choice(live)
                    catalog.set_status(REGION, victim, rng.choice(["saving", "killed"]))
                    victim = rng.choice(live)
                    catalog.delete(REGION, victim)
                    catalog.create(REGION, rng.choice(TYPES), name="new", status="queued")

                await sync()
                async with serve(db) as served, aiohttp.ClientSession() as http:
                    url = f"{served.url}/v1/images"
                    model: dict[tuple[str, str], dict[str, Any]] = {}
                    status, page = await get_json(http, url, limit="7")
                    assert status == 200 and set(page) == {"images", "next_after", "cursor"}
                    cursor, pages = page["cursor"], 1
                    while True:
                        for image in page["images"]:
                            model[(image["region"], image["image_id"])] = {
                                "status": image["status"],
                                "raw": image["raw"],
                            }
                        if page["next_after"] is None:
                            break
                        change()  # the catalog moves on between pages ...
                        await sync()
                        status, page = await get_json(
                            http, url, limit="7", after=page["next_after"]
                        )
                        assert status == 200 and "cursor" not in page
                        pages += 1
                    assert pages >= 10
                    change()  # ... and after the copy
                    await sync()

                    events, _ = await poll_all(http, served.url, cursor)
                    assert {e["kind"] for e in events} >= {
                        "created",
                        "updated",
                        "status_changed",
                        "deleted",
                    }
                    for event in events:
                        apply(model, event)
                    # a 'created' event carries no object: fetch the ones not copied
                    missing = [k for k, v in model.items() if v["raw"] is None]
                    assert missing
                    _, doc = await get_json(
                        http, url, region=REGION, image_id=",".join(i for _, i in missing)
                    )
                    for image in doc["images"]:
                        model[(image["region"], image["image_id"])]["raw"] = image["raw"]

                # the copy is the database's current state, which is the catalog
                rows = await pool.fetch(
                    "SELECT region, image_id, status, raw FROM ims.current_images"
                )
                current = {
                    (r["region"], r["image_id"]): {
                        "status": r["status"],
                        "raw": orjson.loads(r["raw"]),
                    }
                    for r in rows
                }
                assert model == current
                truth = {
                    (REGION, o["id"]): {"status": o["status"], "raw": o}
                    for t in TYPES
                    for o in catalog.images(REGION, t)
                }
                assert model == truth
        finally:
            await pool.close()


@pytest.mark.no_replay_check("hand-made image rows without events")
async def test_images_filters_and_paging(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        for n in range(12):
            await conn.execute(
                "INSERT INTO ims.image_rows (region, image_id, image_type, status, raw,"
                " content_hash, deleted_at) VALUES ($1, $2, $3, $4, $5, '\\x00', $6)",
                "ap-southeast-1" if n % 3 == 0 else "cn-north-4",
                f"i-{n:02d}",
                "gold" if n % 2 else "private",
                "active" if n % 4 else "queued",
                orjson.dumps({"id": f"i-{n:02d}", "n": n}).decode(),
                None if n != 5 else datetime(2026, 1, 1, tzinfo=UTC),
            )
        async with serve(db) as served, aiohttp.ClientSession() as http:
            url = f"{served.url}/v1/images"

            async def ids(**params: str) -> list[str]:
                got, after = [], None
                while True:
                    extra = {"after": after} if after else {}
                    status, page = await get_json(http, url, limit="2", **params, **extra)
                    assert status == 200
                    got += [f"{i['region'][:2]}/{i['image_id']}" for i in page["images"]]
                    after = page["next_after"]
                    if after is None:
                        return got

            every = await ids()
            assert len(every) == 11 and "cn/i-05" not in every  # tombstones are not current
            assert every == sorted(every, key=lambda k: ("ap" not in k, k))
            assert await ids(region="ap-southeast-1") == [
                "ap/i-00",
                "ap/i-03",
                "ap/i-06",
                "ap/i-09",
            ]
            assert await ids(image_type="gold", status="queued") == []
            assert await ids(image_type="private", status="queued") == [
                "ap/i-00",
                "cn/i-04",
                "cn/i-08",
            ]
            assert await ids(image_id="i-01,i-05,i-11") == ["cn/i-01", "cn/i-11"]
            _, page = await get_json(http, url, image_id="i-03")
            [image] = page["images"]
            assert image["raw"] == {"id": "i-03", "n": 3} and image["version"] == 1
            assert image["image_type"] == "gold" and image["deleted_at"] is None
            async with http.get(url, params={"image_id": "a b"}) as resp:
                await assert_one_line_error(resp, 400)
    finally:
        await conn.close()
