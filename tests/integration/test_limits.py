"""Resource limits on what IMS sends: an answer over `api.max_answer_bytes` fails its request and
only its partition; anything within the cap, however odd (a 10 MB name), is stored."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from prometheus_client import REGISTRY

from syncer.config import Settings, settings_from_mapping
from syncer.ims.client import ImsClient
from syncer.store.pool import sync_pool
from syncer.sync.engine import PassResult, run_passes
from syncer.sync.partitions import plan_partitions
from tests.scripted_ims import Answer, ListingHandler, ScriptedIms, Seen, image

REGION = "cn-north-4"
MB = 1_000_000


def settings(server: ScriptedIms, dsn: str, **api: Any) -> Settings:
    return settings_from_mapping(
        {
            "database": {"dsn": dsn},
            "api": {"endpoint": server.endpoint, "auth": "none", "page_size": 50, **api},
            "sync": {"regions": [REGION], "image_types": ["gold", "private", "shared"]},
        },
        {},
        "<test>",
    )


@contextlib.asynccontextmanager
async def scripted(handler: ListingHandler) -> AsyncIterator[ScriptedIms]:
    async with ScriptedIms(handler) as server:
        yield server


async def sync(server: ScriptedIms, dsn: str, **api: Any) -> dict[str, PassResult]:
    s = settings(server, dsn, **api)
    async with sync_pool(s.database, size=4) as pool, ImsClient(s.api) as client:
        results = await run_passes(pool, client, plan_partitions(s), "full", s)
    return {r.partition.image_type: r for r in results}


def catalog() -> list[dict[str, Any]]:
    """Ten images of each type (the handler filters on __imagetype)."""
    return [
        image(n, n, __imagetype=t, id=f"{t}-{n}")
        for t in ("gold", "private", "shared")
        for n in range(10)
    ]


class ByType(ListingHandler):
    def page(self, seen: Seen) -> Answer:
        wanted = seen.param("__imagetype")
        everything = self.images
        self.images = [i for i in everything if i["__imagetype"] == wanted]
        try:
            return super().page(seen)
        finally:
            self.images = everything


def fifty_mb_page() -> bytes:
    """A well-formed page of about 50 MB: 1,000 images of 50 kB each."""
    pad = "x" * 50_000
    images = [image(n, n, id=f"huge-{n}", description=pad) for n in range(1000)]
    return orjson.dumps({"images": images, "page_info": {"next_marker": "huge-999"}})


def oversized() -> float:
    return REGISTRY.get_sample_value("syncer_ims_oversized_answers_total", {"region": REGION}) or 0


async def test_an_oversized_answer_fails_only_its_partition(db: str) -> None:
    """The private partition's first page is 50 MB, over the default cap of 32 MiB: its pass
    fails at once, with one request and an error naming the size and the cap; gold and shared
    complete; the refusal is counted."""
    handler = ByType(catalog())
    huge = fifty_mb_page()
    assert len(huge) > 50 * MB

    def override(seen: Seen, n: int) -> Answer | None:
        return Answer(200, body=huge) if seen.param("__imagetype") == "private" else None

    handler.override = override
    before = oversized()
    async with scripted(handler) as server:
        results = await sync(server, db)
        private_requests = [s for s in server.seen if s.param("__imagetype") == "private"]
    assert {t: r.outcome for t, r in results.items()} == {
        "gold": "ok",
        "private": "failed",
        "shared": "ok",
    }
    error = results["private"].error or ""
    assert error.startswith(f"partition {REGION}/private, HTTP 200"), error
    assert f"answer of {len(huge):,} bytes (Content-Length)" in error
    assert "exceeds api.max_answer_bytes (33,554,432)" in error and "\n" not in error
    assert len(private_requests) == 1  # not retried: it would not shrink
    assert oversized() == before + 1
    conn = await asyncpg.connect(db)
    try:
        live = await conn.fetch(
            "SELECT image_type, count(*) FROM ims.current_images GROUP BY 1 ORDER BY 1"
        )
        runs = await conn.fetch(
            "SELECT image_type, outcome, error FROM ims.sync_runs ORDER BY image_type"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in live] == [("gold", 10), ("shared", 10)]
    assert [(r["image_type"], r["outcome"]) for r in runs] == [
        ("gold", "ok"),
        ("private", "failed"),
        ("shared", "ok"),
    ]
    assert runs[1]["error"] == error


async def test_a_chunked_answer_is_cut_at_the_cap(db: str) -> None:
    """Without a Content-Length the client counts while reading and stops at the cap."""
    handler = ByType(catalog())
    huge = fifty_mb_page()

    def override(seen: Seen, n: int) -> Answer | None:
        if seen.param("__imagetype") == "shared":
            return Answer(200, body=huge, chunked=True)
        return None

    handler.override = override
    async with scripted(handler) as server:
        results = await sync(server, db, max_answer_bytes=4 << 20)
    assert {t: r.outcome for t, r in results.items()} == {
        "gold": "ok",
        "private": "ok",
        "shared": "failed",
    }
    assert "answer of more than 4,194,304 bytes" in (results["shared"].error or "")


async def test_an_image_with_a_10_mb_name_is_stored(db: str) -> None:
    """Within the cap nothing is refused for its size: the name is stored whole, in its column
    and in raw, and a rename of it is an ordinary event."""
    name = "n" * (10 * MB)
    images = catalog()
    images[3]["name"] = name  # gold-3
    handler = ByType(images)
    conn = await asyncpg.connect(db)
    try:
        async with scripted(handler) as server:
            results = await sync(server, db)
            assert {r.outcome for r in results.values()} == {"ok"}
            stored = await conn.fetchrow(
                "SELECT name, raw->>'name' AS raw_name FROM ims.current_images"
                " WHERE image_id = 'gold-3'"
            )
            assert stored is not None
            assert stored["name"] == name and stored["raw_name"] == name
            handler.images[3]["name"] = "short again"
            handler.images[3]["updated_at"] = "2024-01-02T00:00:00Z"
            results = await sync(server, db)
            assert {r.outcome for r in results.values()} == {"ok"}
        events = await conn.fetch(
            "SELECT kind, length(changes->'name'->>0) AS old_name FROM ims.image_events"
            " WHERE image_id = 'gold-3' ORDER BY seq"
        )
        renamed = await conn.fetchval(
            "SELECT name FROM ims.current_images WHERE image_id = 'gold-3'"
        )
    finally:
        await conn.close()
    assert [(r["kind"], r["old_name"]) for r in events] == [
        ("created", None),
        ("updated", 10 * MB),
    ]
    assert renamed == "short again"
