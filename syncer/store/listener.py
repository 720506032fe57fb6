"""One dedicated LISTEN connection per process, reconnected after it drops.

It lives outside every pool (a pooled connection is reset on release, its LISTEN included).
A notification is only a doorbell: ``on_notify`` is called, and readers re-query the table.
A listener that was disconnected missed whatever was sent meanwhile, so ``on_notify`` is also
called after every (re)connect; readers poll on a timer as well, so a lost notification only
delays delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType

import asyncpg

from syncer.errors import DatabaseError
from syncer.store.pool import connect

log = logging.getLogger(__name__)

CHANNEL = "ims_image_events"  # see ims.notify_events() in migrations/versions/0001
APPLICATION_NAME = "syncer-feed-listen"


class Listener:
    """LISTEN on ``channel`` over one connection of its own, for as long as it is entered."""

    def __init__(
        self,
        dsn: str,
        on_notify: Callable[[], None],
        *,
        channel: str = CHANNEL,
        connect_timeout: float = 10.0,
        health_interval: float = 10.0,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._dsn, self._channel = dsn, channel
        self._on_notify, self._on_reconnect = on_notify, on_reconnect
        self._connect_timeout, self._health_interval = connect_timeout, health_interval
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self.problem: str | None = "listener not connected yet"
        self.connects = 0

    @property
    def backend_pid(self) -> int | None:
        """The server process of the LISTEN connection (None while not listening)."""
        conn = self._conn
        return None if conn is None or conn.is_closed() else int(conn.get_server_pid())

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run(), name="feed-listener")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close()

    def _notified(self, *_: object) -> None:
        self._on_notify()

    def _terminated(self, *_: object) -> None:
        self._lost.set()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=2)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self._session()
                delay = 0.1
            except (DatabaseError, OSError, TimeoutError, asyncpg.PostgresError) as e:
                self.problem = f"feed listener reconnecting: {str(e).splitlines()[0]}"
                log.warning("feed listener lost", extra={"error": self.problem})
            except asyncpg.InterfaceError as e:
                self.problem = f"feed listener reconnecting: {e}"
            except Exception as e:  # never leave the process without its listener
                log.exception("feed listener failed")
                self.problem = f"feed listener reconnecting: {type(e).__name__}"
            await self._close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _session(self) -> None:
        """Connect, LISTEN, and stay until the connection is lost."""
        self._lost.clear()
        conn = await connect(
            self._dsn, connect_timeout=self._connect_timeout, application_name=APPLICATION_NAME
        )
        try:
            conn.add_termination_listener(self._terminated)
            await conn.add_listener(self._channel, self._notified)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn  # listening from here on
        if self.connects and self._on_reconnect is not None:
            self._on_reconnect()
        self.connects += 1
        self.problem = None
        self._on_notify()  # whatever was sent while we were not listening
        while True:
            # A peer that vanished without a FIN is only noticed by talking to it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self._health_interval)
            if self._lost.is_set() or conn.is_closed():
                raise DatabaseError("the LISTEN connection was closed")
            await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=self._connect_timeout)
