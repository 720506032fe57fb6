"""The status page for people: ``GET /`` and the JSON document it reads.

``GET /`` answers one static HTML file shipped in the package (``static/status.html``: its
script and styles inline, nothing fetched from anywhere else — its Content-Security-Policy says
so to the browser too). The page reads two things from this server:

* ``GET /v1/status`` — every partition with its freshness, last passes and live images. The
  daemon hands a :data:`StatusSource` (how readiness is handed in: web never reads the database
  itself) and mounts :func:`status_routes` under the change feed's ``/v1/``, so the feed's
  bearer token and its one-line JSON errors apply to it as to every ``/v1/`` route;
* the change feed, live: ``/v1/events/stream``. Without a token the page uses the browser's
  ``EventSource``, which reconnects with ``Last-Event-ID`` by itself; with a token (which an
  ``EventSource`` cannot send) it reads the same stream with ``fetch`` and sends both headers
  itself. The token is typed into the page and kept in the tab's ``sessionStorage``: it never
  goes into a URL, so it is in no access log, proxy log or browser history.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

StatusSource = Callable[[], Awaitable[Mapping[str, Any]]]
"""The status document (JSON-ready; datetimes allowed) — raises ``syncer.errors.DatabaseError``
when it cannot be read (answered 503 by the feed's guard)."""

PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Only this server: no third-party script, style, font or connection, whatever the page does.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
}

_page: bytes | None = None


def page() -> bytes:
    """The page's bytes (read once from the package)."""
    global _page
    if _page is None:
        _page = (importlib.resources.files("syncer.web") / "static" / "status.html").read_bytes()
    return _page


async def _page_handler(request: web.Request) -> web.Response:
    return web.Response(
        body=page(), content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
    )


def add_page(app: web.Application) -> None:
    app.router.add_get("/", _page_handler)


def status_routes(source: StatusSource) -> list[web.RouteDef]:
    """``GET /status`` — to be mounted under ``/v1/`` (``Feed.install(app, routes=...)``)."""

    async def status(request: web.Request) -> web.Response:
        if request.query:
            raise web.HTTPBadRequest(reason="GET /v1/status takes no parameters")
        doc = await source()
        return web.Response(
            body=orjson.dumps(doc, default=str),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    return [web.get("/status", status, allow_head=False)]
