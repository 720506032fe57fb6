"""Resuming exactly: a consumer killed mid-stream resumes with its cursor, its Last-Event-ID or
its stored offset and gets exactly the rest; a replica stopped mid-stream is replaced by another
without loss or repeat; the LISTEN connection killed from the server side still delivers; and
a thousand idle readers hold no more than two database connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY

from tests.conftest import PgServer
from tests.feed_helpers import (
    get_json,
    insert_events,
    poll_all,
    serve,
    sse_events,
    until,
    with_tuning,
)

pytestmark = pytest.mark.no_replay_check(
    "the feed's transport tests write hand-made events without image rows"
)


async def writer(dsn: str, batches: int, per_batch: int, pause: float = 0.01) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        seqs: list[int] = []
        for b in range(batches):
            seqs += await insert_events(conn, per_batch, tag=f"w{b}")
            await asyncio.sleep(pause)
        return seqs
    finally:
        await conn.close()


async def read_stream(
    http: aiohttp.ClientSession,
    url: str,
    out: list[dict[str, Any]],
    *,
    last_id: str | None = None,
    stop_after: int | None = None,
) -> str | None:
    """Follow a stream into ``out``; returns the last id seen. Stops after ``stop_after``
    events (the client 'dies': the connection is dropped mid-stream)."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    seen = 0
    async with http.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        async for ev in sse_events(resp):
            out.append(orjson.loads(ev.data))
            last_id = ev.id
            seen += 1
            if stop_after is not None and seen >= stop_after:
                break
    return last_id


async def test_killed_consumers_resume_exactly(db: str) -> None:
    async with serve(db) as served, aiohttp.ClientSession() as http:
        _, head = await get_json(http, f"{served.url}/v1/events", since="now")
        start = head["next_cursor"]
        produce = asyncio.create_task(writer(db, 40, 25))

        # SSE: die after 120 events, resume with Last-Event-ID, twice
        sse: list[dict[str, Any]] = []
        last = await read_stream(
            http, f"{served.url}/v1/events/stream?since={start}", sse, stop_after=120
        )
        last = await read_stream(
            http, f"{served.url}/v1/events/stream", sse, last_id=last, stop_after=333
        )

        # long-poll: die after a few pages, resume with the cursor
        polled: list[dict[str, Any]] = []
        cursor = start
        for _ in range(3):
            _, doc = await get_json(
                http, f"{served.url}/v1/events", since=cursor, limit="50", wait="5"
            )
            polled += doc["events"]
            cursor = doc["next_cursor"]

        # stored offset: process 70 events, store the offset, die; resume from the offset
        offset: list[dict[str, Any]] = []
        _, doc = await get_json(http, f"{served.url}/v1/events", since=start, limit="70", wait="5")
        offset += doc["events"]
        async with http.put(
            f"{served.url}/v1/consumers/resumer", json={"cursor": doc["next_cursor"]}
        ) as r:
            assert r.status == 200

        written = await produce
        _, stored = await get_json(http, f"{served.url}/v1/consumers/resumer")
        rest, _ = await poll_all(http, served.url, stored["cursor"])
        offset += rest
        more, _ = await poll_all(http, served.url, cursor)
        polled += more
        await read_stream(
            http,
            f"{served.url}/v1/events/stream",
            sse,
            last_id=last,
            stop_after=len(written) - len(sse),
        )
        for got in (sse, polled, offset):
            assert [e["seq"] for e in got] == written


async def test_failover_between_two_replicas_resumes_exactly(db: str) -> None:
    """Two feed servers on one database; the one serving a stream dies mid-stream (its
    connections reset, as when the process is killed); the client reconnects to the other
    with its Last-Event-ID and gets exactly the rest."""
    async with serve(db) as b, aiohttp.ClientSession() as http:
        got: list[dict[str, Any]] = []
        async with serve(db) as a:
            _, head = await get_json(http, f"{a.url}/v1/events", since="now")
            produce = asyncio.create_task(writer(db, 60, 20, pause=0.005))
            stream_a = asyncio.create_task(
                read_stream(http, f"{a.url}/v1/events/stream?since={head['next_cursor']}", got)
            )
            assert await until(lambda: len(got) >= 300, within=10)
            for request in list(a.feed.waiting.values()):
                assert request.transport is not None
                request.transport.abort()  # no goodbye: the connection resets
            with contextlib.suppress(aiohttp.ClientError):
                await asyncio.wait_for(stream_a, 5)
            assert not stream_a.cancelled()
        assert 300 <= len(got) < 1200
        written = await produce
        await read_stream(
            http,
            f"{b.url}/v1/events/stream",
            got,
            last_id=got[-1]["cursor"],
            stop_after=len(written) - len(got),
        )
        assert [e["seq"] for e in got] == written


async def test_listen_connection_killed_from_the_server_still_delivers(
    db: str, pg_server: PgServer
) -> None:
    admin = await asyncpg.connect(pg_server.admin_dsn)
    conn = await asyncpg.connect(db)
    # no polling fallback at all: only the doorbell (and the listener's reconnect) deliver
    tuning = with_tuning(poll_interval=3600)
    try:
        async with serve(db, tuning=tuning) as served, aiohttp.ClientSession() as http:
            assert await until(lambda: served.feed.listener_pid is not None)
            _, head = await get_json(http, f"{served.url}/v1/events", since="now")
            cursor = head["next_cursor"]

            async def next_batch(n: int) -> list[int]:
                nonlocal cursor
                poll = asyncio.create_task(
                    get_json(http, f"{served.url}/v1/events", since=cursor, wait="10")
                )
                await asyncio.sleep(0.2)
                await insert_events(conn, n)
                _, doc = await asyncio.wait_for(poll, 5)
                cursor = doc["next_cursor"]
                return [e["seq"] for e in doc["events"]]

            assert await next_batch(2) == list(range(1, 3))
            reconnects = REGISTRY.get_sample_value("syncer_feed_listener_reconnects_total") or 0
            pid = served.feed.listener_pid
            assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
            # committed while nobody listens: delivered once the listener is back
            poll = asyncio.create_task(
                get_json(http, f"{served.url}/v1/events", since=cursor, wait="10")
            )
            seqs = await insert_events(conn, 3)
            _, doc = await asyncio.wait_for(poll, 8)
            assert [e["seq"] for e in doc["events"]] == seqs
            cursor = doc["next_cursor"]
            assert await until(lambda: served.feed.listener_pid not in (None, pid))
            assert await until(lambda: served.feed.problem() is None)
            assert REGISTRY.get_sample_value("syncer_feed_listener_reconnects_total") == (
                reconnects + 1
            )
            assert await next_batch(1) == [6]
    finally:
        await admin.close()
        await conn.close()


async def test_without_a_listener_the_poll_still_delivers(db: str, pg_server: PgServer) -> None:
    """The LISTEN connection is killed and cannot come back: the ~1 s poll (0.2 s here) still
    delivers every event, and the feed says what is wrong."""
    admin = await asyncpg.connect(pg_server.admin_dsn)
    conn = await asyncpg.connect(db)
    try:
        async with serve(db) as served, aiohttp.ClientSession() as http:
            assert await until(lambda: served.feed.listener_pid is not None)
            listener = served.feed._listener
            assert listener is not None
            listener._dsn = "postgresql://nobody@127.0.0.1:1/none"  # reconnects fail from now on
            await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", served.feed.listener_pid)
            assert await until(lambda: served.feed.problem() is not None)
            assert "listener" in (served.feed.problem() or "")
            _, head = await get_json(http, f"{served.url}/v1/events", since="now")
            poll = asyncio.create_task(
                get_json(http, f"{served.url}/v1/events", since=head["next_cursor"], wait="10")
            )
            await asyncio.sleep(0.3)
            seqs = await insert_events(conn, 2)
            _, doc = await asyncio.wait_for(poll, 3)
            assert [e["seq"] for e in doc["events"]] == seqs
    finally:
        await admin.close()
        await conn.close()


@contextlib.asynccontextmanager
async def idle_readers(url: str, streams: int, polls: int) -> AsyncIterator[list[Any]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        opened: list[Any] = []
        for _ in range(streams):
            resp = await http.get(f"{url}/v1/events/stream")
            assert resp.status == 200
            opened.append(resp)
        waiting = [
            asyncio.create_task(get_json(http, f"{url}/v1/events", since="now", wait="30"))
            for _ in range(polls)
        ]
        try:
            yield opened + waiting
        finally:
            for task in waiting:
                task.cancel()
            for resp in opened:
                resp.close()
            await asyncio.gather(*waiting, return_exceptions=True)


async def test_a_thousand_idle_readers_hold_two_connections(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        async with (
            serve(db, tuning=with_tuning(liveness_check=30)) as served,
            idle_readers(served.url, 500, 500),
        ):
            assert await until(lambda: served.feed.streams == 1000, within=30)
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'syncer-feed%'"
            )
            assert count <= 2
            # and they are not asleep: one commit reaches every one of them
            await insert_events(conn, 1)
            assert await until(lambda: served.feed.streams == 500, within=10)
    finally:
        await conn.close()
