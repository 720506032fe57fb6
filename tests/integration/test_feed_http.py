"""/v1/ over real HTTP against a real database: the JSON of CONTRACT §5, cursors, filters,
400/401/404/410/503 as one-line JSON, Server-Sent Events framing, prompt shutdown."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY

from syncer.feed import Feed
from syncer.feed.cursor import decode
from syncer.web import build_app
from syncer.web import serve as web_serve
from tests.conftest import PgServer
from tests.feed_helpers import (
    Served,
    feed_settings,
    get_json,
    insert_events,
    poll_all,
    serve,
    sse_collect,
    sse_events,
    until,
    with_tuning,
)

pytestmark = pytest.mark.no_replay_check(
    "the feed's transport tests write hand-made events without image rows"
)

EVENT_KEYS = [
    "seq",
    "event_id",
    "occurred_at",
    "region",
    "image_id",
    "kind",
    "old_status",
    "new_status",
    "changes",
    "sync_run_id",
    "cursor",
]


@pytest.fixture
async def conn(db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db)
    try:
        yield c
    finally:
        await c.close()


async def test_event_json_is_the_contract(
    conn: asyncpg.Connection, served: Served, http: aiohttp.ClientSession
) -> None:
    run_id = await conn.fetchval(
        "INSERT INTO ims.sync_runs (region, image_type, mode, worker) "
        "VALUES ('cn-north-4', 'gold', 'full', 't') RETURNING id"
    )
    await conn.execute(
        "INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status, changes,"
        " sync_run_id) VALUES ('cn-north-4', 'i-1', 'status_changed', 'queued', 'saving',"
        ' \'{"status": ["queued", "saving"], "名": [null, "値"]}\', $1)',
        run_id,
    )
    status, doc = await get_json(http, f"{served.url}/v1/events", since="0")
    assert status == 200 and list(doc) == ["events", "next_cursor"]
    [event] = doc["events"]
    row = await conn.fetchrow("SELECT * FROM ims.image_events")
    assert list(event) == EVENT_KEYS
    assert event["seq"] == row["seq"] and isinstance(event["seq"], int)
    assert event["sync_run_id"] == run_id and isinstance(event["sync_run_id"], int)
    assert event["event_id"] == str(row["event_id"])
    assert datetime.fromisoformat(event["occurred_at"]) == row["occurred_at"]
    assert event["occurred_at"].endswith("+00:00")
    assert event["changes"] == {"status": ["queued", "saving"], "名": [None, "値"]}
    assert (event["region"], event["image_id"], event["kind"]) == (
        "cn-north-4",
        "i-1",
        "status_changed",
    )
    assert (event["old_status"], event["new_status"]) == ("queued", "saving")
    assert event["cursor"] == doc["next_cursor"]


async def test_since_limit_and_next_cursor(
    conn: asyncpg.Connection, served: Served, http: aiohttp.ClientSession
) -> None:
    seqs = await insert_events(conn, 5)
    url = f"{served.url}/v1/events"
    _, page = await get_json(http, url, since="0", limit="2")
    assert [e["seq"] for e in page["events"]] == seqs[:2]
    _, page = await get_json(http, url, since=page["next_cursor"], limit="1000")
    assert [e["seq"] for e in page["events"]] == seqs[2:]
    _, empty = await get_json(http, url, since=page["next_cursor"])
    assert empty == {"events": [], "next_cursor": page["next_cursor"]}
    _, head = await get_json(http, url, since="now")
    assert head["events"] == [] and decode(head["next_cursor"]).seq == seqs[-1]
    _, default = await get_json(http, url)  # no since: from the oldest retained event
    assert [e["seq"] for e in default["events"]] == seqs


async def test_long_poll_waits_for_the_next_commit(
    conn: asyncpg.Connection, served: Served, http: aiohttp.ClientSession
) -> None:
    url = f"{served.url}/v1/events"
    _, head = await get_json(http, url, since="now")

    async def commit_later() -> list[int]:
        await asyncio.sleep(0.3)
        return await insert_events(conn, 2)

    began = time.monotonic()
    writer = asyncio.create_task(commit_later())
    _, doc = await get_json(http, url, since=head["next_cursor"], wait="10")
    assert [e["seq"] for e in doc["events"]] == await writer
    assert time.monotonic() - began < 3
    began = time.monotonic()
    _, doc = await get_json(http, url, since=doc["next_cursor"], wait="0.5")
    assert doc["events"] == [] and 0.4 < time.monotonic() - began < 3


async def _seed_types(conn: asyncpg.Connection) -> None:
    """Two images with rows (so events have an image_type) in two regions, one without."""
    for region, image_id, image_type in (
        ("cn-north-4", "g-1", "gold"),
        ("cn-north-4", "p-1", "private"),
        ("ap-southeast-1", "p-2", "private"),
    ):
        await conn.execute(
            "INSERT INTO ims.image_rows (region, image_id, image_type, raw, content_hash)"
            " VALUES ($1, $2, $3, '{}', '\\x00')",
            region,
            image_id,
            image_type,
        )


@pytest.mark.parametrize("path", ["tail", "database"])
async def test_filters_and_the_cursor_passes_what_they_skip(
    conn: asyncpg.Connection, db: str, http: aiohttp.ClientSession, path: str
) -> None:
    await _seed_types(conn)
    async with serve(db, tuning=with_tuning(scan_limit=3)) as served:
        url = f"{served.url}/v1/events"
        _, head = await get_json(http, url, since="now")
        start = "0" if path == "database" else head["next_cursor"]
        if path == "tail":  # a waiting reader keeps the hub's tail filled
            waiter = asyncio.create_task(get_json(http, url, since="now", wait="5"))
            await asyncio.sleep(0.3)
        for region, image_id, kind in [
            ("cn-north-4", "g-1", "created"),
            ("cn-north-4", "p-1", "created"),
            ("ap-southeast-1", "p-2", "created"),
            ("cn-north-4", "g-1", "deleted"),
            ("cn-north-4", "zz", "updated"),
            ("ap-southeast-1", "p-2", "updated"),
        ]:
            await conn.execute(
                "INSERT INTO ims.image_events (region, image_id, kind) VALUES ($1, $2, $3)",
                region,
                image_id,
                kind,
            )
        if path == "tail":
            await waiter
            await asyncio.sleep(0.3)

        async def ids(**flt: str) -> list[str]:
            got, _ = await poll_all(http, served.url, start, limit=2, **flt)
            return [f"{e['image_id']}/{e['kind']}" for e in got]

        assert await ids(region="ap-southeast-1") == ["p-2/created", "p-2/updated"]
        assert await ids(image_type="private") == ["p-1/created", "p-2/created", "p-2/updated"]
        assert await ids(image_type="gold,market") == ["g-1/created", "g-1/deleted"]
        assert await ids(kind="deleted,updated") == ["g-1/deleted", "zz/updated", "p-2/updated"]
        assert await ids(image_id="zz") == ["zz/updated"]
        assert await ids(region="cn-north-4", kind="created", image_type="private") == [
            "p-1/created"
        ]
        # Nothing matches: next_cursor still moves to the last event looked at (a filtered
        # consumer never rescans), scan_limit (3) events at a time.
        _, doc = await get_json(http, url, since=start, image_id="none", limit="5")
        assert doc["events"] == [] and decode(doc["next_cursor"]).seq > decode(
            head["next_cursor"]
        ).seq - (0 if path == "tail" else 999)
        cursor, moved = start, []
        while True:
            _, doc = await get_json(http, url, since=cursor, image_id="none")
            if doc["next_cursor"] == cursor:
                break
            cursor = doc["next_cursor"]
            moved.append(decode(cursor).seq)
        assert moved[-1] == await conn.fetchval("SELECT max(seq) FROM ims.image_events")


LONG = "x" * 5000
BAD_EVENTS = [
    {"since": ""},
    {"since": "1"},
    {"since": "-1"},
    {"since": "NaN"},
    {"since": "now "},
    {"since": LONG},
    {"since": "ÄÖÜ" * 11},
    {"since": "A" * 32},  # the right length, version 0
    {"limit": "0"},
    {"limit": "1001"},
    {"limit": "-5"},
    {"limit": "1e3"},
    {"limit": "99999999999999999999999"},
    {"limit": "NaN"},
    {"limit": "１０"},
    {"limit": ""},
    {"limit": " 10"},
    {"limit": "10.0"},
    {"wait": "61"},
    {"wait": "-1"},
    {"wait": "inf"},
    {"wait": "nan"},
    {"wait": "1e1"},
    {"wait": "0x10"},
    {"wait": "5.1234"},
    {"wait": "100000000000000000000"},
    {"region": ""},
    {"region": "CN-NORTH-4"},
    {"region": "cn-north-4,"},
    {"region": "a" * 100},
    {"region": ",".join(["r"] * 51)},
    {"region": "cn north"},
    {"region": "'; DROP TABLE ims.image_events; --"},
    {"image_type": "public"},
    {"image_type": "gold,"},
    {"kind": "create"},
    {"kind": "Created"},
    {"image_id": ""},
    {"image_id": "a" * 129},
    {"image_id": "a/b"},
    {"image_id": "名前"},
    {"image_id": "\x00"},
    {"regoin": "cn-north-4"},  # a typo is not silently ignored
    {"since": "0", "Since": "0"},
    {"cursor": "0"},
]


BAD_IMAGES = [
    {"limit": "0"},
    {"limit": "abc"},
    {"after": "nope!"},
    {"after": "W10"},  # base64 of []
    {"after": "x" * 1000},
    {"status": "ACTIVE"},
    {"image_type": "x"},
    {"region": "UPPER"},
    {"since": "0"},
]


async def test_malformed_parameters_are_400(served: Served, http: aiohttp.ClientSession) -> None:
    """Table-driven, one server: every malformed value of every parameter, on both routes."""
    for params in BAD_EVENTS:
        for path in ("/v1/events", "/v1/events/stream"):
            if path.endswith("stream") and set(params) & {"limit", "wait"}:
                continue
            async with http.get(served.url + path, params=params) as resp:
                await assert_one_line_error(resp, 400, params)
    for params in BAD_IMAGES:
        async with http.get(f"{served.url}/v1/images", params=params) as resp:
            await assert_one_line_error(resp, 400, params)


async def test_repeated_and_hostile_raw_queries_are_400(
    served: Served, http: aiohttp.ClientSession
) -> None:
    for query in (
        "since=0&since=0",
        "limit=5&limit=6",
        "kind=created&kind=deleted",
        "since=%00",
        "since=%ff%fe",
        "limit=%EF%BC%91",
        "wait=%20%201",
        "region=" + "%E2%80%AE" * 10,
        "&&&=",
        "since=0&" + "a" * 3000 + "=1",
    ):
        async with http.get(
            f"{served.url}/v1/events?{query}", headers={}, allow_redirects=False
        ) as resp:
            await assert_one_line_error(resp, 400, query)
    async with http.get(f"{served.url}/v1/events/stream?since=0&since=now") as resp:
        await assert_one_line_error(resp, 400)
    for header in ("nope", "1", "A" * 32, "x" * 4000):
        async with http.get(
            f"{served.url}/v1/events/stream", headers={"Last-Event-ID": header}
        ) as resp:
            await assert_one_line_error(resp, 400, header)


async def assert_one_line_error(
    resp: aiohttp.ClientResponse, status: int, case: object = None
) -> dict[str, Any]:
    assert resp.status == status, (case, resp.status)
    body = await resp.read()
    assert resp.content_type == "application/json"
    assert b"\n" not in body.strip() and b"Traceback" not in body
    doc = orjson.loads(body)
    assert isinstance(doc["error"], str) and doc["status"] == status
    assert len(doc["error"]) < 400
    return doc


async def test_unknown_route_and_method_are_json(
    served: Served, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{served.url}/v1/nope") as resp:
        await assert_one_line_error(resp, 404)
    async with http.post(f"{served.url}/v1/events") as resp:
        await assert_one_line_error(resp, 405)
        assert "GET" in resp.headers["Allow"]


async def test_an_unexpected_error_is_a_500_without_traceback(
    served: Served, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug with a secret-looking detail")

    served.feed.store.consumers = broken  # type: ignore[method-assign]
    async with http.get(f"{served.url}/v1/consumers") as resp:
        doc = await assert_one_line_error(resp, 500)
    assert "secret" not in doc["error"]
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == ["feed request failed"]


@pytest.mark.parametrize("token", ["s3cret-token"])
async def test_token_guards_every_v1_route(
    db: str, conn: asyncpg.Connection, http: aiohttp.ClientSession, token: str
) -> None:
    await insert_events(conn, 1)
    async with serve(db, token=token) as served:
        url = served.url
        requests = [
            ("GET", "/v1/events?since=0"),
            ("GET", "/v1/events/stream"),
            ("GET", "/v1/images"),
            ("GET", "/v1/consumers"),
            ("GET", "/v1/consumers/c1"),
            ("PUT", "/v1/consumers/c1"),
            ("DELETE", "/v1/consumers/c1"),
            ("GET", "/v1/no-such-route"),
        ]
        for headers in (
            {},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": f"Bearer {token[:-1]}"},
            {"Authorization": f"Basic {token}"},
            {"Authorization": token},
            {"Authorization": "Bearer "},
            {"Authorization": "Bearer ünïcødé"},
        ):
            for method, path in requests:
                async with http.request(method, url + path, headers=headers) as resp:
                    await assert_one_line_error(resp, 401)
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        good = {"Authorization": f"Bearer {token}"}
        status, doc = await get_json(http, f"{url}/v1/events?since=0", headers=good)
        assert status == 200 and len(doc["events"]) == 1
        # the daemon's own routes, outside /v1/, stay open
        for path in ("/healthz", "/readyz"):
            async with http.get(url + path) as resp:
                assert resp.status == 200, path
        async with http.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        assert 'syncer_feed_refusals_total{status="401"}' in text
        assert "syncer_feed_head_seq 1.0" in text


async def test_installed_before_it_runs_as_the_daemon_does(
    db: str, conn: asyncpg.Connection, http: aiohttp.ClientSession
) -> None:
    """`syncer run` serves its HTTP server before the database is up: the feed's routes are
    installed first (an app cannot change once served) and answer 503 until the feed runs."""
    await insert_events(conn, 1)
    feed = Feed(feed_settings(db))

    async def readiness() -> str | None:
        return feed.problem()

    app = build_app(readiness)
    feed.install(app)
    async with web_serve(app, "127.0.0.1", 0) as listening:
        async with http.get(f"{listening.url}/v1/events") as resp:
            doc = await assert_one_line_error(resp, 503)
        assert doc["error"] == "the feed is not running" and resp.headers["Retry-After"]
        async with http.get(f"{listening.url}/readyz") as resp:
            assert resp.status == 503
        async with feed:
            status, page = await get_json(http, f"{listening.url}/v1/events", since="0")
            assert status == 200 and len(page["events"]) == 1
            assert await until(lambda: feed.problem() is None)
        async with http.get(f"{listening.url}/v1/events") as resp:
            await assert_one_line_error(resp, 503)


async def test_stream_framing_heartbeat_and_last_event_id(
    conn: asyncpg.Connection, db: str, http: aiohttp.ClientSession
) -> None:
    seqs = await insert_events(conn, 4)
    async with serve(db, tuning=with_tuning(heartbeat=0.2)) as served:
        _, page = await get_json(http, f"{served.url}/v1/events", since="0")
        cursors = [e["cursor"] for e in page["events"]]
        url = f"{served.url}/v1/events/stream"
        async with http.get(url, params={"since": cursors[0]}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            raw = b""
            async with asyncio.timeout(5):
                while raw.count(b": ping") < 2:
                    raw += await resp.content.readany()
        text = raw.decode()
        assert text.startswith("retry: 2000\n\n")
        first = text.split("\n\n")[1].split("\n")
        assert first[0] == f"id: {cursors[1]}" and first[1] == "event: updated"
        assert orjson.loads(first[2].removeprefix("data: "))["seq"] == seqs[1]
        # Last-Event-ID wins over since
        got = await sse_collect(
            http, f"{url}?since={cursors[0]}", 1, headers={"Last-Event-ID": cursors[2]}
        )
        assert [orjson.loads(e.data)["seq"] for e in got] == [seqs[3]]
        assert got[0].id == cursors[3] and got[0].event == "updated"

        # No since, no Last-Event-ID: new events only
        async def later() -> list[int]:
            await asyncio.sleep(0.3)
            return await insert_events(conn, 1)

        writer = asyncio.create_task(later())
        got = await sse_collect(http, url, 1)
        assert [orjson.loads(e.data)["seq"] for e in got] == await writer


async def test_filtered_stream_bookmarks_what_it_skipped(
    conn: asyncpg.Connection, db: str, http: aiohttp.ClientSession
) -> None:
    """Events a filter skips still move the client's Last-Event-ID (an id-only frame, which
    dispatches nothing), so a reconnect does not scan them again."""
    async with serve(db, tuning=with_tuning(bookmark_interval=0.1)) as served:
        url = f"{served.url}/v1/events/stream?kind=deleted"
        async with http.get(url) as resp:
            await asyncio.sleep(0.3)
            skipped = await insert_events(conn, 5, kind="created")
            raw = b""
            async with asyncio.timeout(5):
                while b"\n\nid: " not in raw:
                    raw += await resp.content.readany()
        frames = [f for f in raw.decode().split("\n\n") if f.startswith("id: ")]
        assert frames and all("\n" not in f for f in frames)  # no event:, no data:
        bookmark = frames[-1].removeprefix("id: ")
        assert decode(bookmark).seq == skipped[-1]
        wanted = await insert_events(conn, 1, kind="deleted")
        got = await sse_collect(http, url, 1, headers={"Last-Event-ID": bookmark})
        assert [orjson.loads(e.data)["seq"] for e in got] == wanted


async def test_refusals_come_before_the_stream_starts(
    conn: asyncpg.Connection, served: Served, http: aiohttp.ClientSession, pg_server: PgServer
) -> None:
    await insert_events(conn, 1)
    other = await _other_database_cursor(pg_server)
    async with http.get(f"{served.url}/v1/events/stream", params={"since": other}) as resp:
        doc = await assert_one_line_error(resp, 410)
    assert doc["resync"] == "/v1/images"
    async with http.get(f"{served.url}/v1/events/stream", headers={"Last-Event-ID": other}) as resp:
        await assert_one_line_error(resp, 410)


async def _other_database_cursor(pg_server: PgServer) -> str:
    """A valid cursor of another database, migrated anew (another epoch)."""
    from syncer.store.migrate import migrate

    name = f"o_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} OWNER syncer_owner")
    finally:
        await admin.close()
    dsn = pg_server.dsn(user="syncer_owner", database=name)
    try:
        await migrate(dsn)
        c = await asyncpg.connect(dsn)
        try:
            await insert_events(c, 1)
        finally:
            await c.close()
        async with serve(dsn) as s, aiohttp.ClientSession() as http:
            _, doc = await get_json(http, f"{s.url}/v1/events", since="0")
        return str(doc["next_cursor"])
    finally:
        admin = await asyncpg.connect(pg_server.admin_dsn)
        try:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        finally:
            await admin.close()


async def test_cursor_from_a_recreated_or_restored_database_is_410(
    conn: asyncpg.Connection, served: Served, http: aiohttp.ClientSession, pg_server: PgServer
) -> None:
    await insert_events(conn, 3)
    # Recreated: migrated anew, another epoch.
    other = await _other_database_cursor(pg_server)
    status, doc = await get_json(http, f"{served.url}/v1/events", since=other)
    assert status == 410 and "another database" in doc["error"]
    # Restored from a backup taken earlier (or failed over to a replica that lost commits):
    # the same epoch, seq numbers reused by other events. A stream is open meanwhile, so the
    # server holds the lost events in its in-memory tail.
    _, page = await get_json(http, f"{served.url}/v1/events", since="0")
    cursor = page["events"][1]["cursor"]  # seq 2
    async with http.get(f"{served.url}/v1/events/stream", params={"since": cursor}) as stream:
        got = [e async for e in _first(sse_events(stream), 1)]
        assert orjson.loads(got[0].data)["seq"] == 3
        await conn.execute("DELETE FROM ims.image_events WHERE seq >= 2")
        await conn.execute("ALTER SEQUENCE ims.image_events_seq RESTART WITH 2")
        await insert_events(conn, 3, tag="after-restore")
        # the open stream ends rather than go on with events after a position that is gone
        async with asyncio.timeout(5):
            rest = [e async for e in sse_events(stream)]
        assert rest == []
    for since in (cursor, page["events"][2]["cursor"]):
        status, doc = await get_json(http, f"{served.url}/v1/events", since=since)
        assert status == 410 and "does not have" in doc["error"], doc
    async with http.get(
        f"{served.url}/v1/events/stream", headers={"Last-Event-ID": got[0].id or ""}
    ) as resp:
        await assert_one_line_error(resp, 410)
    # ... and the cursor of the surviving event still serves exactly what follows it
    status, doc = await get_json(http, f"{served.url}/v1/events", since=page["events"][0]["cursor"])
    assert status == 200 and [e["image_id"] for e in doc["events"]] == [
        f"img-after-restore-{i}" for i in (1, 2, 3)
    ]


async def _first(events: AsyncIterator[Any], n: int) -> AsyncIterator[Any]:
    async for e in events:
        yield e
        n -= 1
        if n == 0:
            return


async def test_shutdown_closes_streams_promptly(
    db: str, conn: asyncpg.Connection, http: aiohttp.ClientSession
) -> None:
    await insert_events(conn, 1)
    ended: list[float] = []

    async with serve(db) as served:

        async def follow() -> None:
            async with http.get(f"{served.url}/v1/events/stream", params={"since": "0"}) as r:
                async for _ in sse_events(r):
                    pass
            ended.append(time.monotonic())

        streams = [asyncio.create_task(follow()) for _ in range(5)]
        poll = asyncio.create_task(
            get_json(http, f"{served.url}/v1/events", since="now", wait="30")
        )
        await asyncio.sleep(0.5)
        began = time.monotonic()
    # the Feed and the server are closed
    await asyncio.wait_for(asyncio.gather(*streams), 5)
    status, doc = await asyncio.wait_for(poll, 5)
    assert status == 200 and doc["events"] == []
    assert max(ended) - began < 1.5


async def test_too_many_streams_is_503(db: str, http: aiohttp.ClientSession) -> None:
    async with serve(db, max_streams=2) as served:
        url = f"{served.url}/v1/events/stream"
        async with http.get(url) as a, http.get(url) as b:
            assert a.status == b.status == 200
            await asyncio.sleep(0.2)
            async with http.get(url) as c:
                await assert_one_line_error(c, 503)
            status, _ = await get_json(http, f"{served.url}/v1/events", since="now", wait="1")
            assert status == 503
        await asyncio.sleep(0.8)  # the liveness check notices the closed streams
        status, _ = await get_json(http, f"{served.url}/v1/events", since="now", wait="0.1")
        assert status == 200


async def test_a_client_that_reads_nothing_is_cut(db: str, conn: asyncpg.Connection) -> None:
    """Its unsent bytes stay bounded (one batch plus the socket buffers), then it is cut."""
    async with serve(db, tuning=with_tuning(write_timeout=1.0, stream_batch=500)) as served:
        port = int(served.url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(b"GET /v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)
        for _ in range(20):
            await insert_events(conn, 1000)
        assert await until(lambda: served.feed.streams == 0), "the stalled stream was not cut"
        assert REGISTRY.get_sample_value("syncer_feed_streams_cut_total", {"reason": "slow"})
        writer.close()
