"""The HTTP server of ``syncer run``: ``/healthz``, ``/readyz``, ``/metrics`` and the status
page ``/``; room for more.

``build_app(readiness)`` makes the ``aiohttp.web.Application``; other layers add their routes
to it before it is served (the change feed installs ``/v1/…``, with the status page's
``/v1/status`` among them: see ``syncer.web.status``).
``serve(app, host, port)`` is an async context manager that listens while its block runs and,
on the way out, closes every socket within ``shutdown_timeout`` — handlers still running then
(long polls, event streams) are cancelled, so a stop never waits on a client.

Routes:

* ``GET /healthz`` — 200 ``{"status": "ok"}`` while the process runs: nothing is checked.
* ``GET /readyz`` — 200 ``{"status": "ready"}`` when ``readiness()`` returns None (with a
  ``degraded`` line when ``degraded()`` has one: ready, but e.g. credentials are rejected), else 503
  ``{"status": "unavailable", "reason": "<one line>"}``. The check is bounded
  (``READINESS_TIMEOUT``): a readiness that hangs (a database that does not answer) is a 503
  saying so, within a second.
* ``GET /metrics`` — prometheus-client's default registry in the Prometheus text format
  (OpenMetrics when the scraper's ``Accept`` asks for it), with the matching content type.
* ``GET /`` — the status page for people (``syncer.web.status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder

from syncer import metrics
from syncer.errors import SyncerError
from syncer.web.status import add_page

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[str | None]]
"""Returns None when the process is ready to serve, else a one-line reason."""

Degraded = Callable[[], str | None]
"""Returns what a person should know about a ready process (e.g. rejected credentials)."""

READINESS_TIMEOUT = 0.8  # seconds: /readyz answers within a second whatever the check does
SHUTDOWN_TIMEOUT = 5.0  # seconds handlers get to finish when the server stops

READINESS_KEY: web.AppKey[Readiness] = web.AppKey("readiness")
DEGRADED_KEY: web.AppKey[Degraded] = web.AppKey("degraded")
READINESS_TIMEOUT_KEY = web.AppKey("readiness_timeout", float)

_MAX_REASON = 500

# Request bodies: only PUT /v1/consumers/{name} takes one ({"cursor": "..."}); a larger body is
# a 413. Request lines (the URL) and header lines are capped by aiohttp's parser at 8190 bytes,
# and a request at 128 headers: beyond, a 400 before any route sees it.
MAX_BODY = 64 * 1024
_ROUTED = web.RequestKey("syncer_routed", bool)


class ListenError(SyncerError):
    """The server cannot listen on its address (in use, not local, no permission)."""


@dataclass(frozen=True)
class Listening:
    """Where a served app listens (``port`` is the bound one, also when 0 was asked)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def build_app(
    readiness: Readiness,
    *,
    readiness_timeout: float = READINESS_TIMEOUT,
    degraded: Degraded | None = None,
) -> web.Application:
    """The application with the operational routes; add more routes before serving it.
    ``degraded`` adds a ``degraded`` line to a ready answer (still 200)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_routed])
    app[READINESS_KEY] = readiness
    app[DEGRADED_KEY] = degraded or (lambda: None)
    app[READINESS_TIMEOUT_KEY] = readiness_timeout
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    add_page(app)
    return app


@web.middleware
async def _routed(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    request[_ROUTED] = True
    return await handler(request)


class _Refusals(AbstractAccessLogger):
    """Not a log: counts the requests refused before any route saw them (aiohttp's parser
    answers a malformed request, a request line or header over its limits, with a 400)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if response.status >= 400 and _ROUTED not in request:
            metrics.observe_http_refusal(response.status)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    timeout = request.app[READINESS_TIMEOUT_KEY]
    try:
        reason = await asyncio.wait_for(request.app[READINESS_KEY](), timeout)
    except TimeoutError:
        reason = f"readiness check did not answer within {timeout:g}s"
    except Exception as e:  # a broken check is a reason to be unready, never a 500
        reason = f"readiness check failed: {type(e).__name__}: {e}"
    if reason is None:
        body = {"status": "ready"}
        with contextlib.suppress(Exception):
            if note := request.app[DEGRADED_KEY]():
                body["degraded"] = " ".join(str(note).split())[:_MAX_REASON]
        return web.json_response(body)
    line = " ".join(str(reason).split())[:_MAX_REASON]
    return web.json_response({"status": "unavailable", "reason": line}, status=503)


async def _metrics(request: web.Request) -> web.Response:
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(REGISTRY), headers={"Content-Type": content_type})


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = SHUTDOWN_TIMEOUT
) -> AsyncIterator[Listening]:
    """Listen on ``host:port`` while the block runs; on exit close the listening socket and
    every connection, giving running handlers at most ``shutdown_timeout`` seconds."""
    runner = web.AppRunner(
        app,
        access_log=log,  # never written to: _Refusals only counts
        access_log_class=_Refusals,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise ListenError(f"cannot listen on {host}:{port}: {reason}") from None
        server = site._server
        assert isinstance(server, asyncio.base_events.Server) and server.sockets
        bound = Listening(host, server.sockets[0].getsockname()[1])
        log.info("HTTP server listening", extra={"url": bound.url})
        yield bound
    finally:
        # cleanup() stops the site, runs on_shutdown, waits for handlers up to
        # shutdown_timeout, cancels the rest, runs on_cleanup; bounded here once more.
        try:
            await asyncio.wait_for(runner.cleanup(), shutdown_timeout + 2.0)
        except TimeoutError:
            log.warning("HTTP server did not stop in time", extra={"timeout": shutdown_timeout})
