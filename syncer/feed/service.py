"""The feed's lifetime: its own pool, the LISTEN connection, the hub, retention and the lag
metric, opened together and closed in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

from aiohttp import web

from syncer.config import Settings
from syncer.errors import ConfigError, DatabaseError
from syncer.feed.hub import Hub, Tuning
from syncer.feed.metrics import (
    CONSUMER_LAG_EVENTS,
    CONSUMER_LAG_SECONDS,
    EVENTS_PRUNED,
    LISTENER_RECONNECTS,
    PRUNED_THROUGH,
)
from syncer.store.events import FeedStore
from syncer.store.listener import Listener

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(settings: Settings) -> None:
    """Refuse to serve /v1/ without a token on a non-loopback address, unless allowed."""
    feed = settings.feed
    if not feed.token and not feed.allow_insecure and not is_loopback(feed.host):
        raise ConfigError(
            f"{settings.source}: feed.listen is {feed.listen!r}, not a loopback address, and "
            "feed.token is empty: set a token (or SYNCER_FEED_TOKEN), listen on 127.0.0.1, "
            "or set feed.allow_insecure = true"
        )


class Feed:
    """The change feed over HTTP. ``async with Feed(settings) as feed: feed.install(app)``."""

    def __init__(
        self, settings: Settings, *, pool_size: int | None = None, tuning: Tuning | None = None
    ) -> None:
        self.settings = settings
        self.tuning = tuning or Tuning()
        self._pool_size = pool_size or settings.feed.pool_size
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._store: FeedStore | None = None
        self._hub: Hub | None = None
        self._listener: Listener | None = None
        # Requests in flight that wait (streams and long-polls): closed promptly at shutdown.
        self.waiting: dict[asyncio.Task[object], web.Request] = {}
        self.streams = 0
        self._lag_labels: set[str] = set()

    # ------------------------------------------------------------------ parts

    @property
    def store(self) -> FeedStore:
        if self._store is None:
            raise DatabaseError("the feed is not running")
        return self._store

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise DatabaseError("the feed is not running")
        return self._hub

    @property
    def running(self) -> bool:
        return self._hub is not None and not self._hub.closing

    @property
    def listener_pid(self) -> int | None:
        """The database backend of the LISTEN connection (for operators and tests)."""
        return None if self._listener is None else self._listener.backend_pid

    def problem(self) -> str | None:
        """One line saying why the feed is degraded, or None."""
        if self._hub is None:
            return "feed not started"
        if self._hub.problem:
            return self._hub.problem
        if self._listener is not None and self._listener.problem:
            return self._listener.problem
        return None

    def install(self, app: web.Application, *, routes: Sequence[web.AbstractRouteDef] = ()) -> None:
        """Mount every /v1/ route on ``app``, and ``routes`` beside them under the same guard
        (bearer token, one-line JSON errors; the status page's ``/v1/status``). When ``app``'s
        server shuts down, the feed's streams and long-polls end first (promptly, and cleanly:
        a stream's client sees its end and reconnects elsewhere)."""
        from syncer.feed.http import routes as feed_routes

        sub = feed_routes(self)
        sub.router.add_routes(routes)
        sub.on_shutdown.append(self._server_shutdown)
        app.add_subapp("/v1/", sub)

    async def _server_shutdown(self, _: web.Application) -> None:
        if self._hub is not None:
            self._hub.close()
        await self._end_waiting()

    # ------------------------------------------------------------------ lifetime

    async def __aenter__(self) -> Feed:
        async with contextlib.AsyncExitStack() as stack:
            db = self.settings.database
            self._store = await stack.enter_async_context(
                FeedStore.open(db.dsn, size=self._pool_size, connect_timeout=db.connect_timeout)
            )
            background = asyncio.Lock()
            hub = Hub(self._store, self.tuning, background)
            await hub.start()
            self._hub = hub
            self._listener = await stack.enter_async_context(
                Listener(
                    db.dsn,
                    hub.ring,
                    connect_timeout=db.connect_timeout,
                    on_reconnect=LISTENER_RECONNECTS.inc,
                )
            )
            self._tasks = [
                asyncio.create_task(hub.run(), name="feed-hub"),
                asyncio.create_task(
                    self._every(
                        self.tuning.retention_interval, self.prune, background, at_start=False
                    ),
                    name="feed-retention",
                ),
                asyncio.create_task(
                    self._every(
                        self.tuning.lag_interval, self.refresh_lag, background, at_start=True
                    ),
                    name="feed-lag",
                ),
            ]
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.close()
        await self._end_waiting()
        for task in self._tasks:
            task.cancel()
        for result in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("feed task failed", exc_info=result)
        self._tasks = []
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        self._store = self._listener = None

    async def _end_waiting(self) -> None:
        """Streams and long-polls see the hub closing and end; any still busy (a stream stuck
        writing to a client that reads nothing) is cut after a short grace."""
        if not self.waiting:
            return
        pending = set(self.waiting)
        _, stuck = await asyncio.wait(pending, timeout=self.tuning.close_grace)
        for task in stuck:
            request = self.waiting.get(task)
            if request is not None and request.transport is not None:
                request.transport.abort()
        if stuck:
            await asyncio.wait(stuck, timeout=self.tuning.close_grace)

    async def _every(
        self,
        interval: float,
        job: Callable[[], Awaitable[object]],
        lock: asyncio.Lock,
        *,
        at_start: bool,
    ) -> None:
        if not at_start:
            await asyncio.sleep(interval)
        while True:
            try:
                async with lock:
                    await job()
            except DatabaseError as e:
                log.warning("feed background job failed", extra={"error": str(e)})
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ background jobs

    async def prune(self) -> int:
        """Retention: remove events older than ``[feed].retention``, in small batches."""
        removed = 0
        retention = self.settings.feed.retention
        batch = self.tuning.retention_batch
        while self._hub is not None:
            result = await self.store.prune(retention, batch)
            removed += result.removed
            if result.pruned_through is not None:
                PRUNED_THROUGH.set(result.pruned_through)
            if result.removed < batch:
                break
            await asyncio.sleep(0.01)  # writers and readers never wait on this; be gentle
        if removed:
            EVENTS_PRUNED.inc(removed)
            log.info("feed retention removed events", extra={"events": removed})
        return removed

    async def refresh_lag(self) -> None:
        """The consumer-lag gauges, one label per stored consumer offset."""
        rows = await self.store.consumers()
        for r in rows:
            CONSUMER_LAG_EVENTS.labels(r.name).set(r.lag_events)
            age = 0.0
            if r.oldest_unread_at is not None:
                age = max((r.now - r.oldest_unread_at).total_seconds(), 0.0)
            CONSUMER_LAG_SECONDS.labels(r.name).set(age)
        names = {r.name for r in rows}
        for gone in self._lag_labels - names:
            for gauge in (CONSUMER_LAG_EVENTS, CONSUMER_LAG_SECONDS):
                with contextlib.suppress(KeyError):
                    gauge.remove(gone)
        self._lag_labels = names
