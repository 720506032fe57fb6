"""Consumer offsets: PUT/GET/list/DELETE over HTTP, readable in SQL, exported as lag metrics."""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest
from prometheus_client import REGISTRY

from syncer.feed.cursor import decode
from tests.feed_helpers import Served, get_json, insert_events
from tests.integration.test_feed_http import assert_one_line_error

pytestmark = pytest.mark.no_replay_check(
    "the feed's transport tests write hand-made events without image rows"
)


async def test_store_read_list_delete(db: str, served: Served) -> None:
    conn = await asyncpg.connect(db)
    try:
        await conn.execute(
            "INSERT INTO ims.image_events (region, image_id, kind, occurred_at)"
            " VALUES ('r', 'old', 'created', now() - interval '90 seconds')"
        )
        await insert_events(conn, 4)
        async with aiohttp.ClientSession() as http:
            _, page = await get_json(http, f"{served.url}/v1/events", since="0", limit="2")
            url = f"{served.url}/v1/consumers/billing.v2"
            async with http.put(url, json={"cursor": page["next_cursor"]}) as resp:
                assert resp.status == 200
                doc = await resp.json()
            assert doc["name"] == "billing.v2" and doc["cursor"] == page["next_cursor"]
            assert doc["lag_events"] == 3 and doc["gone"] is False
            assert 0 <= doc["lag_seconds"] < 60  # the oldest unread event is a fresh one
            status, got = await get_json(http, url)
            assert status == 200 and got["cursor"] == page["next_cursor"]

            # from the very start: lag counts every event, and its age is the oldest one's
            async with http.put(url, json={"cursor": "0"}) as resp:
                doc = await resp.json()
            assert doc["lag_events"] == 5 and doc["lag_seconds"] >= 89
            async with http.put(f"{served.url}/v1/consumers/other", json={"cursor": "now"}) as r:
                doc = await r.json()
            assert doc["lag_events"] == 0 and doc["lag_seconds"] == 0
            assert decode(doc["cursor"]).seq == await conn.fetchval(
                "SELECT max(seq) FROM ims.image_events"
            )

            _, listing = await get_json(http, f"{served.url}/v1/consumers")
            assert [c["name"] for c in listing["consumers"]] == ["billing.v2", "other"]

            # readable in SQL, with the seq a SQL consumer compares against
            rows = await conn.fetch("SELECT name, seq, cursor FROM ims.feed_consumers ORDER BY 1")
            assert [(r["name"], r["seq"]) for r in rows] == [("billing.v2", 0), ("other", 5)]

            # the lag metric
            await served.feed.refresh_lag()
            lag = REGISTRY.get_sample_value(
                "syncer_feed_consumer_lag_events", {"consumer": "billing.v2"}
            )
            assert lag == 5
            assert (
                REGISTRY.get_sample_value(
                    "syncer_feed_consumer_lag_seconds", {"consumer": "billing.v2"}
                )
                >= 89
            )  # type: ignore[operator]

            async with http.delete(url) as resp:
                assert resp.status == 204
            async with http.get(url) as resp:
                await assert_one_line_error(resp, 404)
            async with http.delete(url) as resp:
                await assert_one_line_error(resp, 404)
            await served.feed.refresh_lag()
            assert (
                REGISTRY.get_sample_value(
                    "syncer_feed_consumer_lag_events", {"consumer": "billing.v2"}
                )
                is None
            )
    finally:
        await conn.close()


async def test_bad_names_and_bodies_are_400(served: Served) -> None:
    base = f"{served.url}/v1/consumers"
    async with aiohttp.ClientSession() as http:
        for name in ("-x", ".x", "a" * 129, "a%20b", "%E5%90%8D", "a%00", "a%2Fb", "a:b"):
            async with http.get(f"{base}/{name}") as resp:
                await assert_one_line_error(resp, 400, name)
            async with http.put(f"{base}/{name}", json={"cursor": "0"}) as resp:
                await assert_one_line_error(resp, 400, name)
        for body in (
            b"",
            b"not json",
            b"[]",
            b'"0"',
            b"{}",
            b'{"cursor": 0}',
            b'{"cursor": null}',
            b'{"cursor": "0", "extra": 1}',
            b'{"cursor": "garbage"}',
            b'{"cursor": "' + b"A" * 5000 + b'"}',
            b"\xff\xfe",
        ):
            async with http.put(f"{base}/c", data=body) as resp:
                await assert_one_line_error(resp, 400, body[:20])
        async with http.get(f"{base}?x=1") as resp:
            await assert_one_line_error(resp, 400)
        status, _ = await get_json(http, f"{base}/c")
        assert status == 404  # nothing was stored by the refusals
