"""The /v1/ routes: long-poll, Server-Sent Events, list-then-follow, consumer offsets.

Mounted by ``Feed.install`` as a sub-application, so its middleware (bearer token, and errors
as one-line JSON: 400 bad input, 401, 404, 410 cursor gone, 503, never a traceback) applies to
/v1/ only. Every refusal of a stream is answered before the stream starts: a browser's
EventSource stops reconnecting on a non-200.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from syncer.errors import DatabaseError
from syncer.feed.cursor import Position
from syncer.feed.hub import NO_FILTER, CursorGone, Hub, position_of
from syncer.feed.metrics import (
    EVENTS_DELIVERED,
    POLLS_WAITING,
    REFUSALS,
    STREAMS_CUT,
    STREAMS_OPEN,
    STREAMS_REFUSED,
)
from syncer.feed.params import (
    BadRequest,
    Since,
    consumer_body,
    consumer_name,
    encode_after,
    events_query,
    images_query,
    parse_since,
)
from syncer.feed.render import Rendered, events_body, image_json
from syncer.store.events import ConsumerRow, EventFilter

if TYPE_CHECKING:
    from syncer.feed.service import Feed

log = logging.getLogger(__name__)

RESYNC = "/v1/images"
RESYNC_HINT = (
    "resync: list the current images with GET /v1/images (its first page carries a cursor), "
    "then follow GET /v1/events or /v1/events/stream from that cursor"
)
# A filtered read that matches nothing looks at up to this many scan windows before it answers
# (without wait) with an empty page whose next_cursor has moved on.
SCANS_PER_REQUEST = 10
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TooBusy(Exception):
    """More streams and waiting long-polls than [feed].max_streams."""


class SlowClient(Exception):
    """A stream's client took no bytes for [write_timeout] seconds."""


def json_response(
    doc: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc), status=status, content_type="application/json", headers=headers
    )


def refuse(status: int, message: str, **extra: Any) -> web.Response:
    """A one-line JSON error (the message never holds a line break)."""
    REFUSALS.labels(str(status)).inc()
    headers = extra.pop("headers", None)
    doc = {"error": " ".join(message.split()), "status": status, **extra}
    return json_response(doc, status, headers)


def frames(events: list[Rendered]) -> bytes:
    return b"".join(e.frame for e in events)


class Routes:
    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self._token = feed.settings.feed.token.encode()

    @property
    def hub(self) -> Hub:
        return self.feed.hub

    # ------------------------------------------------------------------ middleware

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        given = credentials.strip().encode("utf-8", "replace")
        # compare_digest takes the same time whatever the bytes (lengths aside)
        return scheme.lower() == "bearer" and hmac.compare_digest(given, self._token)

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token and not self._authorized(request):
            return refuse(
                401,
                "missing or wrong token: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="syncer feed"'},
            )
        if not self.feed.running:
            return refuse(503, "the feed is not running", headers={"Retry-After": "1"})
        try:
            return await handler(request)
        except BadRequest as e:
            return refuse(400, str(e))
        except CursorGone as e:
            extra: dict[str, Any] = {"resync": RESYNC, "hint": RESYNC_HINT}
            if e.pruned_through is not None:
                extra["pruned_through"] = e.pruned_through
            return refuse(410, str(e), **extra)
        except TooBusy:
            return refuse(
                503,
                f"too many open streams and long-polls (feed.max_streams = "
                f"{self.feed.settings.feed.max_streams})",
                headers={"Retry-After": "5"},
            )
        except web.HTTPException as e:
            if e.status < 400:
                raise
            allow = e.headers.get("Allow")
            return refuse(e.status, e.reason, headers={"Allow": allow} if allow else None)
        except DatabaseError as e:
            log.warning(
                "feed request failed: database", extra={"path": request.path, "error": str(e)}
            )
            return refuse(503, "database unavailable", headers={"Retry-After": "5"})
        except Exception:
            log.exception("feed request failed", extra={"path": request.path})
            return refuse(500, "internal error")

    # ------------------------------------------------------------------ helpers

    async def first_read(
        self, since: Since, limit: int, flt: EventFilter = NO_FILTER
    ) -> tuple[Position, list[Rendered], Position]:
        """Where a reader starts (a cursor as given, the oldest retained event, or the head),
        checked by reading the first page after it, after one fresh hub cycle (so the head is
        now's, and a wait=0 read sees every event committed before the request).
        Returns (start, events, position after them)."""
        hub = self.hub
        for attempt in range(3):
            start = await hub.oldest() if since == "oldest" else None
            await hub.fresh()
            if since == "now":
                start = hub.head
            elif start is None:
                assert not isinstance(since, str)
                start = since
            try:
                events, after = await hub.read(start, limit, flt)
                return start, events, after
            except CursorGone as e:
                # "0" is the oldest RETAINED event: retention may have moved meanwhile
                if since != "oldest" or e.pruned_through is None or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def slot(self, request: web.Request) -> Iterator[None]:
        """One of [feed].max_streams places (streams and waiting long-polls), taken at once —
        before any await, so that a burst of requests cannot all pass the check before any has
        counted — or TooBusy; held until the request ends, which the feed's close hastens."""
        if self.feed.streams >= self.feed.settings.feed.max_streams:
            STREAMS_REFUSED.inc()
            raise TooBusy
        task = asyncio.current_task()
        assert task is not None
        self.feed.streams += 1
        self.feed.waiting[task] = request
        try:
            yield
        finally:
            self.feed.streams -= 1
            self.feed.waiting.pop(task, None)

    # ------------------------------------------------------------------ /v1/events

    async def events(self, request: web.Request) -> web.StreamResponse:
        q = events_query(request.query)
        hub = self.hub
        _, events, pos = await self.first_read(q.since or "oldest", q.limit, q.filter)
        for _ in range(SCANS_PER_REQUEST - 1):  # filtered: look further while nothing matched
            if events or pos.seq >= hub.head.seq:
                break
            events, pos = await hub.read(pos, q.limit, q.filter)
        if not events and q.wait > 0 and not hub.closing:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + q.wait
            with self.slot(request), POLLS_WAITING.track_inprogress():
                async with hub.subscribe():
                    while not events and not hub.closing:
                        remaining = deadline - loop.time()
                        if remaining <= 0:
                            break
                        await hub.wait_beyond(pos.seq, remaining)
                        events, pos = await hub.read(pos, q.limit, q.filter)
        EVENTS_DELIVERED.labels("poll").inc(len(events))
        return web.Response(body=events_body(events, pos.encode()), content_type="application/json")

    # ------------------------------------------------------------------ /v1/events/stream

    async def stream(self, request: web.Request) -> web.StreamResponse:
        q = events_query(request.query, stream=True)
        last = request.headers.get("Last-Event-ID", "").strip()
        since = parse_since(last, "Last-Event-ID") if last else (q.since or "now")
        with self.slot(request):
            return await self._stream(request, q.filter, since)

    async def _stream(
        self, request: web.Request, flt: EventFilter, since: Since
    ) -> web.StreamResponse:
        hub, tuning = self.hub, self.feed.tuning
        # The first read checks the cursor: a 410 (or 503) is answered before the stream starts.
        _, events, pos = await self.first_read(since, tuning.stream_batch, flt)
        resp = EventSourceResponse(sep="\n")
        resp.ping_interval = tuning.heartbeat
        loop = asyncio.get_running_loop()
        with STREAMS_OPEN.track_inprogress():
            async with hub.subscribe():
                await resp.prepare(request)
                try:
                    await self.send(resp, f"retry: {tuning.retry_ms}\n\n".encode() + frames(events))
                    EVENTS_DELIVERED.labels("sse").inc(len(events))
                    told = loop.time()  # when the client last got an id
                    delivered = pos
                    while not hub.closing and request.transport is not None:
                        events, nxt = await hub.read(pos, tuning.stream_batch, flt)
                        if events:
                            await self.send(resp, frames(events))
                            EVENTS_DELIVERED.labels("sse").inc(len(events))
                            pos = delivered = nxt
                            told = loop.time()
                            continue
                        pos = nxt
                        if pos != delivered and loop.time() - told >= tuning.bookmark_interval:
                            # Filtered out events passed: an id-only frame moves the client's
                            # Last-Event-ID without dispatching an event, so a reconnect
                            # does not scan them again.
                            await self.send(resp, f"id: {pos.encode()}\n\n".encode())
                            delivered, told = pos, loop.time()
                        await hub.wait_beyond(pos.seq, tuning.liveness_check)
                except ConnectionError:
                    pass  # the client went away
                except SlowClient:
                    STREAMS_CUT.labels("slow").inc()
                    log.info("feed stream cut: client too slow", extra={"peer": request.remote})
                    if request.transport is not None:
                        request.transport.abort()
                except (CursorGone, DatabaseError) as e:
                    # The client reconnects with its Last-Event-ID and is answered properly.
                    log.warning("feed stream ended", extra={"error": str(e)})
                except Exception:
                    log.exception("feed stream failed")
                finally:
                    resp.stop_streaming()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                        await resp.wait()
                if hub.closing:
                    STREAMS_CUT.labels("shutdown").inc()
        return resp

    async def send(self, resp: EventSourceResponse, data: bytes) -> None:
        """One write; a client that takes none of it within write_timeout is cut (its unsent
        bytes are bounded by one batch plus the transport's buffer)."""
        try:
            async with asyncio.timeout(self.feed.tuning.write_timeout):
                await resp.write(data)
        except TimeoutError:
            raise SlowClient from None

    # ------------------------------------------------------------------ /v1/images

    async def images(self, request: web.Request) -> web.StreamResponse:
        q = images_query(request.query)
        rows, state = await self.feed.store.images_page(
            q.after,
            regions=q.regions,
            image_types=q.image_types,
            statuses=q.statuses,
            image_ids=q.image_ids,
            limit=q.limit,
        )
        last = rows[-1] if len(rows) == q.limit else None
        doc: dict[str, Any] = {
            "images": [image_json(r) for r in rows],
            "next_after": None if last is None else encode_after(last["region"], last["image_id"]),
        }
        if state is not None:
            doc["cursor"] = position_of(state).encode()
        return json_response(doc)

    # ------------------------------------------------------------------ /v1/consumers

    async def put_consumer(self, request: web.Request) -> web.StreamResponse:
        name = consumer_name(request.match_info["name"])
        # 410 for a cursor this database cannot continue from
        pos, _, _ = await self.first_read(consumer_body(await request.read()), 1)
        await self.feed.store.put_consumer(name, pos.encode(), pos.seq)
        return await self.get_consumer(request)

    async def get_consumer(self, request: web.Request) -> web.StreamResponse:
        name = consumer_name(request.match_info["name"])
        rows = await self.feed.store.consumers(name)
        if not rows:
            return refuse(404, f"no consumer named {name!r}")
        return json_response(consumer_doc(rows[0]))

    async def list_consumers(self, request: web.Request) -> web.StreamResponse:
        if request.query:
            raise BadRequest("GET /v1/consumers takes no parameters")
        return json_response(
            {"consumers": [consumer_doc(r) for r in await self.feed.store.consumers()]}
        )

    async def delete_consumer(self, request: web.Request) -> web.StreamResponse:
        name = consumer_name(request.match_info["name"])
        if not await self.feed.store.delete_consumer(name):
            return refuse(404, f"no consumer named {name!r}")
        return web.Response(status=204)


def consumer_doc(r: ConsumerRow) -> dict[str, Any]:
    lag_seconds = 0.0
    if r.oldest_unread_at is not None:
        lag_seconds = round(max((r.now - r.oldest_unread_at).total_seconds(), 0.0), 3)
    doc: dict[str, Any] = {
        "name": r.name,
        "cursor": r.cursor,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "lag_events": r.lag_events,
        "lag_seconds": lag_seconds,
        "gone": r.seq < r.pruned_through,
    }
    if doc["gone"]:
        doc["resync"] = RESYNC
        doc["hint"] = "retention removed events after this offset; " + RESYNC_HINT
    return doc


def routes(feed: Feed) -> web.Application:
    r = Routes(feed)
    app = web.Application(middlewares=[r.guard])
    app.router.add_get("/events", r.events, allow_head=False)
    app.router.add_get("/events/stream", r.stream, allow_head=False)
    app.router.add_get("/images", r.images, allow_head=False)
    app.router.add_get("/consumers", r.list_consumers, allow_head=False)
    app.router.add_get("/consumers/{name}", r.get_consumer, allow_head=False)
    app.router.add_put("/consumers/{name}", r.put_consumer)
    app.router.add_delete("/consumers/{name}", r.delete_consumer)
    return app
