"""``syncer run``: the daemon, put together and taken apart.

Start: the HTTP server first (``/healthz`` at once, ``/readyz`` 503 until ready), then the
database — waited for with backoff while it is down, refused in one line when its schema is not
this code's — then this replica's membership, the IMS client, the change feed's routes, and the
scheduler. Stop (SIGTERM, SIGINT): no new passes; running passes are cancelled — a page
transaction in flight rolls back, each run is closed as failed with the reason, each lease
released — within ``[sync].stop_timeout``; then the replica leaves the list and every
connection and socket is closed, in reverse order. Exit 0.

Pools: passes run on their own pool (one session each, for their whole life); heartbeats,
lease renewals, scheduling decisions and readiness use a small control pool, so that none of
them ever waits behind a sync pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from syncer import metrics
from syncer.config import Settings, redact_dsn
from syncer.daemon.membership import BACKOFF_MAX, BACKOFF_START, Membership
from syncer.daemon.scheduler import PartitionScheduler
from syncer.daemon.status import StatusReport
from syncer.errors import DatabaseError
from syncer.feed import Feed, check_listen
from syncer.ims.client import ImsClient
from syncer.store.leases import THIS_PROCESS, Replica
from syncer.store.passes import Mode
from syncer.store.pool import SESSION_ERRORS, describe_session_error, sync_pool
from syncer.store.status import ensure_schema, full_sweep_ages
from syncer.sync.engine import PassResult, run_pass
from syncer.sync.partitions import Partition, plan_partitions
from syncer.web import build_app, serve, status_routes

log = logging.getLogger(__name__)

CONTROL_POOL_SIZE = 3
READY_QUERY_TIMEOUT = 0.5


@dataclass
class Daemon:
    settings: Settings
    replica: Replica
    membership: Membership | None = None
    scheduler: PartitionScheduler | None = None
    client: ImsClient | None = None
    feed: Feed | None = None
    report: StatusReport | None = None
    stopping: bool = False

    async def status(self) -> dict[str, Any]:
        """The status page's document (GET /v1/status)."""
        if self.membership is None or self.report is None:
            raise DatabaseError("starting: waiting for the database")
        return await self.report.read(self.membership.control)

    async def readiness(self) -> str | None:
        """None when ready: the database answers and the scheduler runs."""
        if self.stopping:
            return "stopping"
        m = self.membership
        if m is None:
            return "starting: waiting for the database"
        if not m.health.up:
            return f"database unreachable: {m.health.reason}"
        try:
            await asyncio.wait_for(m.control.fetchval("SELECT 1"), READY_QUERY_TIMEOUT)
        except (*SESSION_ERRORS, DatabaseError) as e:
            return f"database unreachable: {describe_session_error(e)}"
        if self.scheduler is None or not self.scheduler.is_running:
            return "starting: scheduler not running yet"
        return None

    def degraded(self) -> str | None:
        """Ready, but something needs a person: credentials the gateway rejects, a feed that
        lost its LISTEN connection (it polls meanwhile)."""
        notes = [
            self.client.credential_problem() if self.client is not None else None,
            self.feed.problem() if self.feed is not None and self.feed.running else None,
        ]
        return "; ".join(n for n in notes if n) or None


async def _wait_for_database(control: asyncpg.Pool, stop: asyncio.Event, where: str) -> bool:
    """Wait (with backoff) until the database answers and has this code's schema. False when
    asked to stop first; raises DatabaseError when the schema is not this code's."""
    delay = BACKOFF_START
    while not stop.is_set():
        try:
            await ensure_schema(control)
            return True
        except SESSION_ERRORS as e:
            log.warning(
                "database unreachable; waiting for it",
                extra={"database": where, "reason": describe_session_error(e), "retry_in": delay},
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, BACKOFF_MAX)
    return False


@contextlib.asynccontextmanager
async def _signals(stop: asyncio.Event) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.warning("stopping on %s", sig.name)
    stop.set()


async def run_daemon(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    replica: Replica = THIS_PROCESS,
    handle_signals: bool = True,
) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT arrives). Raises SyncerError (one line)
    for what makes running impossible: a bad listen address, a schema not this code's."""
    settings.require_credentials()
    check_listen(settings)
    stop = stop or asyncio.Event()
    feed = Feed(settings)
    daemon = Daemon(settings, replica, feed=feed, report=StatusReport(settings, replica.worker))
    partitions = plan_partitions(settings)
    metrics.declare_partitions(partitions)
    s, db = settings.sync, settings.database
    where = redact_dsn(settings.database.dsn)
    async with contextlib.AsyncExitStack() as stack:
        if handle_signals:
            await stack.enter_async_context(_signals(stop))
        app = build_app(daemon.readiness, degraded=daemon.degraded)
        # its routes (and the status page's /v1/status) answer 503 until the feed runs
        feed.install(app, routes=status_routes(daemon.status))
        await stack.enter_async_context(
            serve(app, settings.feed.host, settings.feed.port, shutdown_timeout=2.0)
        )
        control = await stack.enter_async_context(
            sync_pool(db, size=CONTROL_POOL_SIZE, lazy=True, name="syncer-control")
        )
        passes = await stack.enter_async_context(
            sync_pool(db, size=s.partition_concurrency + 1, lazy=True)
        )
        if not await _wait_for_database(control, stop, where):
            return
        membership = Membership(control, (control, passes), replica, s.lease_ttl)
        try:
            await membership.join()
            membership.health.mark_up()
            ages = await full_sweep_ages(control)
        except SESSION_ERRORS as e:  # gone again already: the heartbeat keeps trying
            membership.health.mark_down(describe_session_error(e))
            ages = {}
        daemon.membership = membership
        await stack.enter_async_context(feed)
        stack.push_async_callback(membership.leave)
        for (region, image_type), (started, _) in ages.items():
            metrics.set_last_full_sweep(region, image_type, started.timestamp())

        client = await stack.enter_async_context(ImsClient(settings.api, settings.credentials))
        daemon.client = client

        async def one_pass(p: Partition, mode: Mode) -> PassResult:
            return await run_pass(
                passes, client, p, mode, settings, replica=replica, control=control
            )

        scheduler = PartitionScheduler(settings, partitions, membership, client, one_pass)
        beats = asyncio.create_task(membership.run(stop), name="heartbeat")
        await scheduler.start(ages)
        daemon.scheduler = scheduler
        log.info(
            "syncer daemon running",
            extra={
                "worker": replica.worker,
                "partitions": len(partitions),
                "listen": settings.feed.listen,
            },
        )
        try:
            await stop.wait()
        finally:
            daemon.stopping = True
            await scheduler.stop(s.stop_timeout)
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
    log.info("syncer daemon stopped", extra={"worker": replica.worker})
