"""`syncer feed tail`: the feed's reference consumer, over Server-Sent Events.

It follows ``/v1/events/stream``, remembers the ``id:`` of every frame, and after any drop —
the network, a restart, a failover to another replica — reconnects with ``Last-Event-ID``, so it
sees every event once, in order. Refusals (400, 401, 404, 410) are not retried: a person must act.
This module yields what it reads; the CLI prints.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from syncer.errors import SyncerError

MAX_DELAY = 30.0


class FeedRefused(SyncerError):
    """The server refused the stream (bad parameter, token, cursor gone): retrying is futile."""


@dataclass(frozen=True)
class Event:
    id: str | None
    kind: str | None
    data: str  # the event's JSON, one line


@dataclass(frozen=True)
class Notice:
    text: str  # a disconnection, a reconnection


def base_url(listen: str) -> str:
    """``[feed].listen`` (HOST:PORT) as a URL a client on this machine can reach."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _frames(
    resp: aiohttp.ClientResponse,
) -> AsyncIterator[tuple[str | None, str | None, str | None, int | None]]:
    """(id, event, data, retry) of each frame; data None for frames that dispatch nothing."""
    ident: str | None = None
    event: str | None = None
    data: list[str] = []
    retry: int | None = None
    async for raw in resp.content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            yield ident, event, ("\n".join(data) if data else None), retry
            ident, event, data, retry = None, None, [], None
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
        elif name == "retry" and value.isdigit():
            retry = int(value)


async def follow(
    url: str,
    *,
    token: str = "",
    since: str | None = None,
    kinds: Sequence[str] = (),
    regions: Sequence[str] = (),
    connect_timeout: float = 10.0,
    idle_timeout: float = 60.0,
) -> AsyncIterator[Event | Notice]:
    """Follow the stream forever (until cancelled), resuming after every disconnect."""
    params: dict[str, str] = {}
    if kinds:
        params["kind"] = ",".join(kinds)
    if regions:
        params["region"] = ",".join(regions)
    last_id: str | None = None
    delay = 1.0
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=connect_timeout, sock_read=idle_timeout
    )
    stream_url = url.rstrip("/") + "/v1/events/stream"
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            headers = {"Accept": "text/event-stream"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            query = dict(params)
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            elif since is not None:
                query["since"] = since
            try:
                async with session.get(stream_url, params=query, headers=headers) as resp:
                    if resp.status in (400, 401, 403, 404, 410):
                        raise FeedRefused(
                            f"{stream_url}: HTTP {resp.status}: {await _reason(resp)}"
                        )
                    if resp.status != 200:
                        raise aiohttp.ClientResponseError(
                            resp.request_info, (), status=resp.status, message=await _reason(resp)
                        )
                    if last_id is not None:
                        yield Notice(f"reconnected to {url}, resuming after the last event seen")
                    async for ident, kind, data, retry in _frames(resp):
                        if retry is not None:
                            delay = min(retry / 1000, MAX_DELAY)
                        if ident is not None:
                            last_id = ident
                        if data is not None:
                            yield Event(ident, kind, data)
                reason = "the server ended the stream"
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
                reason = f"{type(e).__name__}: {e}".rstrip(": ")
            yield Notice(f"disconnected ({reason}); reconnecting in {delay:g}s")
            await asyncio.sleep(delay)
            delay = min(max(delay, 1.0) * 2, MAX_DELAY)


async def _reason(resp: aiohttp.ClientResponse) -> str:
    body = await resp.read()
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return resp.reason or "error"
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, str):
        hint = doc.get("hint")
        return error + (f" ({hint})" if isinstance(hint, str) else "")
    return resp.reason or "error"


def describe(data: str) -> str:
    """One readable line for an event."""
    try:
        e = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if not isinstance(e, dict):
        return data
    where = f"{e.get('region')}/{e.get('image_id')}"
    line = f"{e.get('occurred_at')}  #{e.get('seq')}  {e.get('kind'):<14} {where}"
    old, new = e.get("old_status"), e.get("new_status")
    if old != new:
        line += f"  {old or '∅'} → {new or '∅'}"
    changes = e.get("changes")
    if isinstance(changes, dict) and changes and e.get("kind") != "status_changed":
        line += "  changed: " + ", ".join(sorted(changes))
    return line
