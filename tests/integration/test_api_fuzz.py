"""Fuzzing what the IMS API can send us (hypothesis), through a real local HTTP server
(tests/scripted_ims.py) and the real ImsClient, pager, page digest and sync pass: random bytes,
deep nesting, huge arrays, random JSON, and wrong types for every field of a page and of an
image, under any status. The client gives a page or raises a SyncerError with one line, never
another exception; the pager and the records built from a page do the same; and a sync pass
fed such pages fails only its own partition, with a clear reason, leaving what it committed
before intact (and the event log replaying to the state). Examples: ``SYNCER_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from syncer.config import ApiSettings, settings_from_mapping
from syncer.errors import SyncerError
from syncer.ims.client import ImsClient
from syncer.ims.pager import Listing, iter_listing
from syncer.records import digest_page
from syncer.store.pool import sync_pool
from syncer.store.verify import verify_replay
from syncer.sync.engine import run_passes
from syncer.sync.partitions import Partition
from tests.budget import FUZZ, FUZZ_EXAMPLES
from tests.scripted_ims import Answer, ListingHandler, ScriptedIms, Seen, image, images_at
from tests.strategies import json_values as any_json

REGION = "cn-north-4"
FIELDS = [
    "id", "name", "status", "created_at", "updated_at", "active_at", "tags", "protected",
    "min_ram", "min_disk", "size", "__image_size", "visibility", "owner", "__os_type",
    "virtual_size", "__imagetype", "deleted",
]  # fmt: skip


async def instantly(seconds: float) -> None:
    await asyncio.sleep(0)


def json_values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    return any_json(max_leaves=max_leaves, max_text=20)


@st.composite
def broken_images(draw: st.DrawFn) -> Any:
    """A good image with some fields given values of any type (or dropped), or not an object."""
    obj = image(draw(st.integers(1, 9999)), draw(st.integers(0, 10)))
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        if draw(st.integers(0, 4)) == 0:
            obj.pop(key, None)
        else:
            obj[key] = draw(json_values())
    return obj if draw(st.integers(0, 9)) else draw(json_values())


def deep(depth: int, inside: bytes = b"") -> bytes:
    return b"[" * depth + inside + b"]" * depth


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Bytes a server could answer with."""
    kind = draw(st.sampled_from(["bytes", "json", "page", "page", "page", "deep", "huge", "text"]))
    event(f"body: {kind}")
    if kind == "bytes":
        return draw(st.binary(max_size=500))
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "json":
        return orjson.dumps(draw(json_values(12)))
    if kind == "deep":
        depth = draw(st.sampled_from([100, 1000, 5000, 100_000]))
        where = draw(st.sampled_from(["top", "images", "field"]))
        if where == "top":
            return deep(depth)
        if where == "images":
            return b'{"images": ' + deep(depth) + b"}"
        one = orjson.dumps(image(1, 0))[:-1] + b', "nested": ' + deep(depth) + b"}"
        return b'{"images": [' + one + b"]}"
    if kind == "huge":
        n = draw(st.sampled_from([10_000, 200_000]))
        item = draw(st.sampled_from([b"0", b"{}", b'"x"', b"null", orjson.dumps(image(1, 0))]))
        return b'{"images": [' + b",".join([item] * n) + b"]}"
    # a page: images (some broken), page_info in any shape
    doc: dict[str, Any] = {"images": draw(st.lists(broken_images(), max_size=5))}
    info = draw(
        st.one_of(
            st.none(),
            st.just({}),
            st.builds(lambda m: {"next_marker": m}, json_values()),
            json_values(),
        )
    )
    if info is not None:
        doc["page_info"] = info
    if draw(st.integers(0, 5)) == 0:
        doc["images"] = draw(json_values())
    return orjson.dumps(doc)


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    status = draw(st.sampled_from([200] * 6 + [201, 204, 302, 400, 404, 429, 500, 503]))
    headers = draw(
        st.sampled_from(
            [{}, {"Retry-After": "0"}, {"Retry-After": "junk"}, {"X-Request-Id": "\u00e9\t x"}]
        )
    )
    return Answer(
        status,
        body=draw(bodies()),
        headers=headers,
        truncate=draw(st.integers(0, 15)) == 0,
        drop=draw(st.integers(0, 30)) == 0,
    )


def one_line(e: SyncerError) -> str:
    text = str(e)
    assert text and "\n" not in text and "\r" not in text and len(text) < 2000, text
    assert "Traceback" not in text
    return text


@pytest.fixture
async def ims() -> AsyncIterator[ScriptedIms]:
    async with ScriptedIms() as server:
        yield server


def api(server: ScriptedIms) -> ApiSettings:
    return ApiSettings(endpoint=server.endpoint, auth="none", max_attempts=2, request_timeout=5)


@FUZZ
@pytest.mark.timeout(120 + FUZZ_EXAMPLES)
@given(first=answers(), second=answers())
async def test_fuzz_any_answer_is_a_page_or_a_one_line_error(
    ims: ScriptedIms, first: Answer, second: Answer
) -> None:
    """One request, then a listing whose second page is hostile, then the records of every page
    that came through: a value or a SyncerError, nothing else."""
    pages = []
    ims.handler = _queue(first)
    async with ImsClient(api(ims), sleep=instantly) as client:
        try:
            page = await client.list_images(REGION, [("__imagetype", "gold")], partition="p/gold")
            pages.append(page.images)
            event("client: page")
        except SyncerError as e:
            one_line(e)
            event(f"client: {type(e).__name__}")

        good = images_at(range(3))
        ims.handler = _queue(
            Answer(200, {"images": good, "page_info": {"next_marker": good[-1]["id"]}}), second
        )
        listing = Listing(REGION, "gold", page_size=3)
        try:
            async for images in iter_listing(
                client, listing, partition="p/gold", clock_skew=timedelta(0)
            ):
                pages.append(images)
            event("pager: complete")
        except SyncerError as e:
            one_line(e)
            event(f"pager: {type(e).__name__}")
    for images in pages:
        try:
            digest = digest_page(images, partition="p/gold")
            digest.records(list(range(len(images))))
        except SyncerError as e:
            one_line(e)


def _queue(*answers: Answer) -> Any:
    """A handler answering with ``answers`` in turn, then an empty last page."""
    pending = list(answers)

    async def handler(seen: Seen) -> Answer:
        return pending.pop(0) if pending else Answer(200, {"images": [], "page_info": {}})

    return handler


# ---- a sync pass fed hostile pages -----------------------------------------------------------


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    settings = settings_from_mapping({"database": {"dsn": db}, "sync": {"regions": [REGION]}}, {})
    async with sync_pool(settings.database, size=4) as p:
        yield p


@FUZZ
@pytest.mark.timeout(120 + 3 * FUZZ_EXAMPLES)
@given(hostile=answers())
async def test_fuzz_a_hostile_page_fails_only_its_partition(
    ims: ScriptedIms, pool: asyncpg.Pool, db: str, hostile: Answer
) -> None:
    """gold's second page is hostile, private is fine: private completes; gold completes (the
    answer was a page after all) or fails with a one-line reason naming it; gold's first page
    stays committed; the event log replays to the state."""
    await pool.execute(
        "TRUNCATE ims.image_rows, ims.image_events, ims.sync_runs, ims.partitions, ims.partition_leases"
    )
    gold = ListingHandler(images_at(range(6)))
    gold.override = lambda seen, n: hostile if seen.param("marker") else None
    private = ListingHandler([image(n, n) for n in range(100, 106)])

    async def handler(seen: Seen) -> Answer:
        return await (gold if seen.param("__imagetype") == "gold" else private)(seen)

    ims.handler = handler
    settings = settings_from_mapping(
        {
            "database": {"dsn": db},
            "api": {"endpoint": ims.endpoint, "auth": "none", "page_size": 3, "max_attempts": 2},
            "sync": {"regions": [REGION], "image_types": ["gold", "private"]},
        },
        {},
        "<test>",
    )
    async with ImsClient(settings.api, settings.credentials, sleep=instantly) as client:
        results = await run_passes(
            pool,
            client,
            [Partition(REGION, "gold"), Partition(REGION, "private")],
            "full",
            settings,
        )
    by_type = {r.partition.image_type: r for r in results}
    assert by_type["private"].outcome == "ok", by_type["private"].error
    g = by_type["gold"]
    event(f"gold pass: {g.outcome}")
    if g.outcome != "ok":
        assert g.error is not None and f"partition {REGION}/gold" in one_line(SyncerError(g.error))
        assert "internal error" not in g.error, g.error
    counts = dict(
        await pool.fetch("SELECT image_type, count(*) FROM ims.current_images GROUP BY 1")
    )
    assert counts["private"] == 6 and counts["gold"] >= 3, counts  # gold's first page stays
    report = await verify_replay(pool)
    assert report.ok, report.lines()
