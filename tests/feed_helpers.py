"""Serving the feed in tests: a real aiohttp server on 127.0.0.1:0 with a Feed installed, and
small clients (long-poll, SSE) that read it over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import asyncpg
import orjson

from syncer.config import Settings, settings_from_mapping
from syncer.feed import Feed, Tuning
from syncer.web import build_app
from syncer.web import serve as web_serve

# Fast enough for tests; everything else as in production.
FAST = Tuning(
    poll_interval=0.2,
    idle_after=0.5,
    liveness_check=0.5,
    retention_interval=3600,
    lag_interval=3600,
    close_grace=0.3,
)


def feed_settings(dsn: str, **feed: Any) -> Settings:
    return settings_from_mapping(
        {"database": {"dsn": dsn}, "sync": {"regions": ["cn-north-4"]}, "feed": feed},
        {},
        "<test>",
    )


@dataclass
class Served:
    feed: Feed
    url: str


@contextlib.asynccontextmanager
async def serve(
    dsn: str, *, tuning: Tuning = FAST, pool_size: int | None = None, **feed: Any
) -> AsyncIterator[Served]:
    """The feed installed on the daemon's HTTP server (syncer.web), on 127.0.0.1:<any port>."""
    settings = feed_settings(dsn, **feed)
    async with Feed(settings, tuning=tuning, pool_size=pool_size) as f:

        async def readiness() -> str | None:
            return f.problem()

        app = build_app(readiness)
        f.install(app)
        async with web_serve(app, "127.0.0.1", 0, shutdown_timeout=2) as listening:
            yield Served(f, listening.url)


INSERT = """
INSERT INTO ims.image_events (region, image_id, kind, old_status, new_status, changes)
SELECT $1, 'img-' || $2::text || '-' || g, $3, 'queued', 'active', '{"name": ["a", "b"]}'::jsonb
FROM generate_series(1, $4) g
RETURNING seq
"""


async def insert_events(
    conn: asyncpg.Connection | asyncpg.Pool,
    n: int = 1,
    *,
    region: str = "cn-north-4",
    kind: str = "updated",
    tag: str = "x",
) -> list[int]:
    """n events in ONE transaction (one statement), as the sync appends them."""
    rows = await conn.fetch(INSERT, region, tag, kind, n)
    return [r["seq"] for r in rows]


async def get_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> tuple[int, dict[str, Any]]:
    async with session.get(url, params=params or None, headers=headers) as resp:
        body = await resp.read()
        return resp.status, orjson.loads(body)


async def poll_all(
    session: aiohttp.ClientSession, base: str, since: str, *, limit: int = 1000, **params: Any
) -> tuple[list[dict[str, Any]], str]:
    """Read without waiting until the head: an empty page whose next_cursor did not move (an
    empty page that moved past filtered-out events is not the end)."""
    got: list[dict[str, Any]] = []
    while True:
        status, doc = await get_json(
            session, f"{base}/v1/events", since=since, limit=str(limit), **params
        )
        assert status == 200, doc
        got.extend(doc["events"])
        if not doc["events"] and doc["next_cursor"] == since:
            return got, since
        since = doc["next_cursor"]


@dataclass
class SseEvent:
    id: str | None
    event: str | None
    data: str


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    """Parse a text/event-stream; yields dispatched events (not comments or id-only frames)."""
    ident: str | None = None
    event: str | None = None
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield SseEvent(ident, event, "\n".join(data))
            event, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            ident = value
        elif name == "event":
            event = value
        elif name == "data":
            data.append(value)


async def sse_collect(
    session: aiohttp.ClientSession,
    url: str,
    count: int,
    *,
    headers: dict[str, str] | None = None,
    within: float = 10.0,
) -> list[SseEvent]:
    """Open a stream and return its first ``count`` events."""
    out: list[SseEvent] = []
    async with asyncio.timeout(within), session.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        async for ev in sse_events(resp):
            out.append(ev)
            if len(out) >= count:
                break
    return out


def with_tuning(**changes: Any) -> Tuning:
    return replace(FAST, **changes)


async def until(condition: Callable[[], bool], within: float = 5.0, step: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``within`` seconds pass (False)."""
    for _ in range(max(1, int(within / step))):
        if condition():
            return True
        await asyncio.sleep(step)
    return condition()
