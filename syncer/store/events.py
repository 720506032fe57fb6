"""The change feed's side of PostgreSQL: reading events, the facts cursors are checked against,
consumer offsets, retention, and the list-then-follow listing.

``FeedStore`` owns the feed's own small pool (``application_name = syncer-feed``), apart from
the sync's: feed requests never wait behind sync passes holding connections. Driver errors
leave this module as ``DatabaseError`` with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import asyncpg

from syncer.errors import DatabaseError
from syncer.store.pool import describe, open_pool
from syncer.store.queries import sql

T = TypeVar("T")

APPLICATION_NAME = "syncer-feed"
#: Lag is counted exactly up to this many events, and estimated from seq numbers beyond.
LAG_EXACT_UP_TO = 100_000


class EventRow(NamedTuple):
    """One row of ims.image_events plus its image's current type."""

    seq: int
    event_id: UUID
    occurred_at: datetime
    region: str
    image_id: str
    kind: str
    old_status: str | None
    new_status: str | None
    changes: str  # the jsonb as JSON text
    sync_run_id: int | None
    image_type: str | None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a reader wants; None means any. Values are validated by the caller."""

    regions: tuple[str, ...] | None = None
    image_types: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | None = None
    image_id: str | None = None

    @property
    def is_empty(self) -> bool:
        return (
            self.regions is None
            and self.image_types is None
            and self.kinds is None
            and self.image_id is None
        )

    def matches(self, region: str, image_type: str | None, kind: str, image_id: str) -> bool:
        return (
            (self.regions is None or region in self.regions)
            and (self.image_types is None or image_type in self.image_types)
            and (self.kinds is None or kind in self.kinds)
            and (self.image_id is None or image_id == self.image_id)
        )


@dataclass(frozen=True, slots=True)
class FeedState:
    """The feed's identity, retention boundary and newest event, from one snapshot."""

    epoch: UUID
    pruned_through: int
    pruned_event_id: UUID | None
    head_seq: int  # 0 when the feed never had an event
    head_event_id: UUID | None


@dataclass(frozen=True, slots=True)
class PositionFacts:
    """What a cursor at ``seq`` is checked against."""

    seq: int
    epoch: UUID
    pruned_through: int
    pruned_event_id: UUID | None
    event_id: UUID | None  # the event holding that seq now, if any


@dataclass(frozen=True, slots=True)
class TailCheck:
    """What the hub checks its in-memory tail against."""

    epoch: UUID
    pruned_through: int
    pruned_event_id: UUID | None
    at_head: UUID | None  # the event now holding the hub's head seq, if any


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Events after a position, and the position checks of the same snapshot."""

    facts: PositionFacts
    rows: list[EventRow]
    # Where the reader stands after these rows: the last row when the page is full, else the
    # last event looked at (a filtered read moves past what it filtered out). None: no events.
    scanned_to: tuple[int, UUID] | None


@dataclass(frozen=True, slots=True)
class PruneResult:
    removed: int
    pruned_through: int | None  # the new boundary, when this batch moved it


@dataclass(frozen=True, slots=True)
class ConsumerRow:
    name: str
    cursor: str
    seq: int
    created_at: datetime
    updated_at: datetime
    pruned_through: int
    lag_events: int
    oldest_unread_at: datetime | None
    now: datetime


def _event_row(r: asyncpg.Record) -> EventRow:
    return EventRow(
        r["seq"],
        r["event_id"],
        r["occurred_at"],
        r["region"],
        r["image_id"],
        r["kind"],
        r["old_status"],
        r["new_status"],
        r["changes"],
        r["sync_run_id"],
        r["image_type"],
    )


def _list(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else list(values)


class FeedStore:
    """The feed's database access over its own pool."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool, self._dsn = pool, dsn

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, dsn: str, *, size: int = 4, connect_timeout: float = 10.0
    ) -> AsyncIterator[FeedStore]:
        # Idle connections close after a minute: a quiet feed holds one, plus its listener.
        # Every feed query is a short index range: JIT compilation (hundreds of ms, triggered
        # by plan cost alone) never pays off for them.
        pool = await open_pool(
            dsn,
            size=size,
            connect_timeout=connect_timeout,
            server_settings={"application_name": APPLICATION_NAME, "jit": "off"},
            max_idle=60.0,
        )
        try:
            yield cls(pool, dsn)
        finally:
            await _close(pool)

    async def _run(self, what: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        try:
            async with self._pool.acquire() as conn:
                return await fn(conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as e:
            raise DatabaseError(f"{what}: {describe(e, self._dsn)}") from e

    # ------------------------------------------------------------------ events

    async def state(self) -> FeedState:
        async def q(conn: asyncpg.Connection) -> FeedState:
            r = await conn.fetchrow(sql("feed_head"))
            if r is None:
                raise DatabaseError("ims.feed_meta has no row: run `syncer migrate`")
            return _state(r)

        return await self._run("reading the feed head", q)

    async def tail_after(self, seq: int, limit: int) -> tuple[list[EventRow], TailCheck]:
        """The next events after ``seq``, and what a reader that already holds the events up
        to ``seq`` checks them against, from the same snapshot."""

        async def q(conn: asyncpg.Connection) -> tuple[list[EventRow], TailCheck]:
            rows = await conn.fetch(sql("tail_after"), seq, limit)
            first = rows[0]
            check = TailCheck(
                first["epoch"], first["pruned_through"], first["pruned_event_id"], first["at_head"]
            )
            return [_event_row(r) for r in rows if r["seq"] is not None], check

        return await self._run("reading events", q)

    async def read_after(
        self, seq: int, limit: int, flt: EventFilter | None, *, scan: int
    ) -> ReadResult:
        """Up to ``limit`` events after ``seq`` passing ``flt`` (looking at no more than ``scan``
        events when filtering), with the facts to check the position against, all from ONE
        snapshot: retention running meanwhile cannot open an unseen gap."""

        async def q(conn: asyncpg.Connection) -> ReadResult:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                p = await conn.fetchrow(sql("position_check"), seq)
                if p is None:
                    raise DatabaseError("ims.feed_meta has no row: run `syncer migrate`")
                facts = PositionFacts(
                    seq, p["epoch"], p["pruned_through"], p["pruned_event_id"], p["event_id"]
                )
                scanned_to: tuple[int, UUID] | None
                if flt is None or flt.is_empty:
                    rows = [
                        _event_row(r) for r in await conn.fetch(sql("events_after"), seq, limit)
                    ]
                    scanned_to = (rows[-1].seq, rows[-1].event_id) if rows else None
                    return ReadResult(facts, rows, scanned_to)
                end = await conn.fetchrow(sql("events_window_end"), seq, max(scan, limit))
                if end is None:
                    return ReadResult(facts, [], None)
                found = await conn.fetch(
                    sql("events_matching"),
                    seq,
                    end["seq"],
                    _list(flt.regions),
                    _list(flt.image_types),
                    _list(flt.kinds),
                    flt.image_id,
                    limit,
                )
                rows = [_event_row(r) for r in found]
                if len(rows) == limit:
                    scanned_to = (rows[-1].seq, rows[-1].event_id)
                else:
                    scanned_to = (end["seq"], end["event_id"])
                return ReadResult(facts, rows, scanned_to)

        return await self._run("reading events", q)

    async def prune(self, older_than: float, batch: int) -> PruneResult:
        """One batch of retention: removes up to ``batch`` of the oldest events that occurred
        more than ``older_than`` seconds ago (a prefix of the feed) and moves the boundary."""

        async def q(conn: asyncpg.Connection) -> PruneResult:
            r = await conn.fetchrow(sql("prune_events"), older_than, batch)
            assert r is not None
            return PruneResult(r["removed"], r["pruned_through"])

        return await self._run("pruning events", q)

    # ------------------------------------------------------------------ consumers

    async def put_consumer(self, name: str, cursor: str, seq: int) -> None:
        async def q(conn: asyncpg.Connection) -> None:
            await conn.execute(sql("consumer_put"), name, cursor, seq)

        await self._run("storing a consumer offset", q)

    async def delete_consumer(self, name: str) -> bool:
        async def q(conn: asyncpg.Connection) -> bool:
            return await conn.fetchval(sql("consumer_delete"), name) is not None

        return await self._run("deleting a consumer offset", q)

    async def consumers(self, name: str | None = None) -> list[ConsumerRow]:
        async def q(conn: asyncpg.Connection) -> list[ConsumerRow]:
            rows = await conn.fetch(sql("consumers"), name, LAG_EXACT_UP_TO)
            return [ConsumerRow(**dict(r)) for r in rows]

        return await self._run("reading consumer offsets", q)

    # ------------------------------------------------------------------ list then follow

    async def images_page(
        self,
        after: tuple[str, str] | None,
        *,
        regions: Sequence[str] | None,
        image_types: Sequence[str] | None,
        statuses: Sequence[str] | None,
        image_ids: Sequence[str] | None = None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], FeedState | None]:
        """One page of live images in key order after ``after``. The first page (``after`` is
        None) also returns the feed's state from the SAME snapshot (REPEATABLE READ): following
        the feed from its head misses nothing that page does not show, and repeats nothing."""
        args = (_list(regions), _list(image_types), _list(statuses), limit, _list(image_ids))

        async def q(conn: asyncpg.Connection) -> tuple[list[dict[str, Any]], FeedState | None]:
            if after is not None:
                rows = await conn.fetch(sql("images_page"), *after, *args)
                return [dict(r) for r in rows], None
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                head = await conn.fetchrow(sql("feed_head"))
                rows = await conn.fetch(sql("images_page"), "", "", *args)
            assert head is not None
            return [dict(r) for r in rows], _state(head)

        return await self._run("listing images", q)


def _state(r: asyncpg.Record) -> FeedState:
    return FeedState(
        r["epoch"],
        r["pruned_through"],
        r["pruned_event_id"],
        r["head_seq"] or 0,
        r["head_event_id"],
    )


async def _close(pool: asyncpg.Pool) -> None:
    """Close gracefully; a connection still busy after a few seconds is cut."""
    try:
        await asyncio.wait_for(pool.close(), timeout=5)
    except TimeoutError:
        pool.terminate()
