"""The hub: one shared reader of the feed per process, and the in-memory tail it keeps.

Every waiting client — long-polls and streams, a thousand of them or one — shares the hub. On
each wake-up (a NOTIFY from the listener, or the ~1 s poll timer) the hub fetches the new events
ONCE, renders each once (JSON and SSE frame, as bytes), appends them to a bounded tail, and
wakes its waiters, who copy bytes out of the tail. A client further behind than the tail reaches
pages from the database on its own, through the feed's pool, until it catches up.

Invariant: the tail holds every committed event with ``base.seq < seq <= head.seq`` (seq is
commit-ordered, so what the hub fetched after ``head`` is always the next prefix). A cursor in
that range is checked against the tail; any other goes to the database, in the same snapshot as
the events read after it.

With nobody subscribed for a while the hub only follows the head (one small query per wake-up)
and keeps no tail, so a sync writing events fast costs the feed next to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left, bisect_right
from collections.abc import AsyncIterator
from dataclasses import dataclass

from syncer.errors import DatabaseError, SyncerError
from syncer.feed.cursor import NO_TAG, Position, epoch_bytes, tag_of
from syncer.feed.metrics import HEAD_SEQ, PRUNED_THROUGH
from syncer.feed.render import Rendered
from syncer.store.events import EventFilter, FeedState, FeedStore, PositionFacts, TailCheck

log = logging.getLogger(__name__)

NO_FILTER = EventFilter()


@dataclass(frozen=True)
class Tuning:
    """Knobs with sensible defaults; tests and benchmarks turn them."""

    poll_interval: float = 1.0  # the fallback when a notification is lost
    fetch_batch: int = 1000  # events per hub query
    tail_events: int = 20_000  # events kept in memory (about 10-20 MB)
    scan_limit: int = 5000  # events a filtered read looks at per request
    stream_batch: int = 1000  # events per write to one stream
    idle_after: float = 10.0  # seconds without subscribers before the tail is dropped
    heartbeat: float = 15.0  # SSE comment line interval
    retry_ms: int = 2000  # SSE reconnect hint
    write_timeout: float = 30.0  # a stream whose client takes no bytes for this long is cut
    liveness_check: float = 5.0  # how often an idle stream checks that its client is still there
    bookmark_interval: float = 5.0  # filtered streams: an id-only frame after skipped events
    retention_interval: float = 60.0  # seconds between retention runs (the first after one)
    retention_batch: int = 2000  # events deleted per statement
    lag_interval: float = 15.0  # seconds between consumer-lag metric refreshes
    close_grace: float = 0.5  # on shutdown, how long streams get to end before they are cut


class CursorGone(SyncerError):
    """A cursor this database can no longer serve: pruned, or from another database or past."""

    def __init__(self, message: str, *, pruned_through: int | None = None) -> None:
        self.pruned_through = pruned_through
        super().__init__(message)


def check_facts(pos: Position, facts: PositionFacts) -> None:
    """Raise CursorGone unless ``pos`` names a place this database can continue from."""
    if pos.epoch != epoch_bytes(facts.epoch):
        raise CursorGone("the cursor is from another database (recreated since?)")
    if pos.seq < facts.pruned_through:
        raise CursorGone(
            f"the cursor is older than the feed keeps (events through seq "
            f"{facts.pruned_through} were removed by retention)",
            pruned_through=facts.pruned_through,
        )
    if pos.seq == facts.pruned_through:
        expected: bytes | None = tag_of(facts.pruned_event_id)
    else:
        expected = None if facts.event_id is None else tag_of(facts.event_id)
    if expected != pos.tag:
        raise CursorGone(
            "the cursor names an event this database does not have (restored from a backup?)"
        )


def position_of(state: FeedState) -> Position:
    """The feed's head in ``state``: its newest event, or the retention boundary when every
    event was removed, or seq 0 when there never was one."""
    if state.head_seq > state.pruned_through:
        return Position(state.head_seq, tag_of(state.head_event_id), epoch_bytes(state.epoch))
    return Position(state.pruned_through, tag_of(state.pruned_event_id), epoch_bytes(state.epoch))


class Hub:
    def __init__(self, store: FeedStore, tuning: Tuning, background: asyncio.Lock) -> None:
        self._store, self.tuning, self._background = store, tuning, background
        self.epoch = b""
        self._seqs: list[int] = []
        self._events: list[Rendered] = []
        self._base = (0, NO_TAG)  # the position just before the tail's first event
        self._head = (0, NO_TAG)  # the newest event known
        loop = asyncio.get_running_loop()
        self._changed: asyncio.Future[None] = loop.create_future()
        self._cycle_fut: asyncio.Future[None] = loop.create_future()
        self._cycles_started = self._cycles_done = 0
        self._cycle_error: str | None = None
        self._doorbell = asyncio.Event()
        self._subscribers = 0
        self._last_subscribed = loop.time()
        self._active = False
        self.closing = False
        self.problem: str | None = None

    # ------------------------------------------------------------------ state

    @property
    def subscribers(self) -> int:
        return self._subscribers

    @property
    def head(self) -> Position:
        return Position(self._head[0], self._head[1], self.epoch)

    @property
    def tail_size(self) -> int:
        return len(self._events)

    async def start(self) -> None:
        self._reset(await self._store.state())

    def _reset(self, state: FeedState) -> None:
        """Drop the tail; it starts again at the head."""
        self.epoch = epoch_bytes(state.epoch)
        at = position_of(state)
        head = (at.seq, at.tag)
        moved = head != self._head
        self._seqs, self._events = [], []
        self._base = self._head = head
        HEAD_SEQ.set(head[0])
        PRUNED_THROUGH.set(state.pruned_through)
        if moved:
            self._publish()

    def _publish(self) -> None:
        fut, self._changed = self._changed, asyncio.get_running_loop().create_future()
        fut.set_result(None)

    def ring(self) -> None:
        """The doorbell: something was committed (or may have been)."""
        self._doorbell.set()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[None]:
        """Held by every waiting client: while anyone holds it, the hub keeps the tail."""
        self._subscribers += 1
        if not self._active:
            self.ring()
        try:
            yield
        finally:
            self._subscribers -= 1
            self._last_subscribed = asyncio.get_running_loop().time()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        while not self.closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._doorbell.wait(), timeout=self.tuning.poll_interval)
            self._doorbell.clear()
            if self.closing:
                break
            self._cycles_started += 1
            number = self._cycles_started
            try:
                async with self._background:
                    await self._cycle()
                if self.problem is not None:
                    log.info("feed reads the database again")
                self.problem = self._cycle_error = None
            except DatabaseError as e:
                if self.problem is None:
                    log.warning("feed cannot read the database", extra={"error": str(e)})
                self.problem = self._cycle_error = f"feed cannot read the database: {e}"
            except Exception as e:  # a bug: keep serving what we can, say so, try again
                log.exception("feed hub cycle failed")
                self.problem = self._cycle_error = f"feed hub failed: {type(e).__name__}"
            finally:
                self._cycles_done = number
                self._cycle_over()
            if self._cycle_error is not None:
                await asyncio.sleep(self.tuning.poll_interval)

    async def _cycle(self) -> None:
        loop = asyncio.get_running_loop()
        wanted = self._subscribers > 0 or (
            loop.time() - self._last_subscribed < self.tuning.idle_after
        )
        if not wanted:
            self._active = False
            self._reset(await self._store.state())
            return
        self._active = True
        while not self.closing:
            rows, check = await self._store.tail_after(self._head[0], self.tuning.fetch_batch)
            if not self._continues(check):
                # The database was replaced, restored or failed over to a replica that lost
                # commits (its seq numbers rewound), or retention passed the hub's own head:
                # the tail cannot continue. It restarts at the database's head; readers whose
                # cursors were in it are checked against the database (410 if rewound).
                log.warning("feed tail dropped: the database no longer continues it")
                self._reset(await self._store.state())
                return
            if not rows:
                return
            epoch = self.epoch
            fresh = [Rendered(r, epoch) for r in rows]
            self._events.extend(fresh)
            self._seqs.extend(e.seq for e in fresh)
            self._head = (fresh[-1].seq, fresh[-1].tag)
            self._trim()
            HEAD_SEQ.set(self._head[0])
            self._publish()
            if len(rows) < self.tuning.fetch_batch:
                return
            await asyncio.sleep(0)  # let the streams send this batch before the next

    def _continues(self, check: TailCheck) -> bool:
        """Does the database still hold the hub's head event, under the same identity?"""
        if epoch_bytes(check.epoch) != self.epoch:
            return False
        seq, tag = self._head
        if seq < check.pruned_through:
            return False
        if seq == check.pruned_through:
            return tag == tag_of(check.pruned_event_id)
        return check.at_head is not None and tag_of(check.at_head) == tag

    def _trim(self) -> None:
        keep = self.tuning.tail_events
        excess = len(self._events) - keep
        if excess > keep // 4:
            last = self._events[excess - 1]
            self._base = (last.seq, last.tag)
            del self._events[:excess], self._seqs[:excess]

    async def fresh(self) -> None:
        """Return after one complete hub cycle that started after this call."""
        target = self._cycles_started + 1
        self.ring()
        while self._cycles_done < target and not self.closing:
            await asyncio.shield(self._cycle_fut)
        if self._cycle_error is not None:
            raise DatabaseError(self._cycle_error)

    async def wait_beyond(self, seq: int, within: float) -> None:
        """Return when the hub knows of an event after ``seq``, on closing, or after
        ``within`` seconds."""
        if self.closing or self._head[0] > seq or within <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._changed), within)

    def _cycle_over(self) -> None:
        fut, self._cycle_fut = self._cycle_fut, asyncio.get_running_loop().create_future()
        fut.set_result(None)

    def close(self) -> None:
        """Wake everyone: waiters see ``closing`` and return."""
        self.closing = True
        self._publish()
        self._cycle_over()
        self.ring()

    # ------------------------------------------------------------------ reading

    async def oldest(self) -> Position:
        """The position before the oldest retained event (``since=0``)."""
        state = await self._store.state()
        return Position(
            state.pruned_through, tag_of(state.pruned_event_id), epoch_bytes(state.epoch)
        )

    async def read(
        self, pos: Position, limit: int, flt: EventFilter = NO_FILTER
    ) -> tuple[list[Rendered], Position]:
        """Up to ``limit`` events after ``pos`` passing ``flt``, and the position after them
        (past filtered-out events too). Raises CursorGone when ``pos`` cannot be continued."""
        base, head = self._base[0], self._head[0]
        if pos.epoch == self.epoch and base <= pos.seq <= head:
            self._check_in_tail(pos)
            return self._from_tail(pos, limit, flt)
        res = await self._store.read_after(pos.seq, limit, flt, scan=self.tuning.scan_limit)
        check_facts(pos, res.facts)
        epoch = epoch_bytes(res.facts.epoch)
        events = [Rendered(r, epoch) for r in res.rows]
        if res.scanned_to is None:
            return events, pos
        seq, event_id = res.scanned_to
        return events, Position(seq, tag_of(event_id), epoch)

    def _check_in_tail(self, pos: Position) -> None:
        if pos.seq == self._base[0]:
            ok = pos.tag == self._base[1]
        else:
            k = bisect_left(self._seqs, pos.seq)
            ok = k < len(self._seqs) and self._seqs[k] == pos.seq and self._events[k].tag == pos.tag
        if not ok:
            raise CursorGone(
                "the cursor names an event this database does not have (restored from a backup?)"
            )

    def _from_tail(
        self, pos: Position, limit: int, flt: EventFilter
    ) -> tuple[list[Rendered], Position]:
        events, i = self._events, bisect_right(self._seqs, pos.seq)
        if flt.is_empty:
            out = events[i : i + limit]
            return out, (out[-1].position(self.epoch) if out else pos)
        out, j, end = [], i, min(len(events), i + self.tuning.scan_limit)
        while j < end and len(out) < limit:
            e = events[j]
            if flt.matches(e.region, e.image_type, e.kind, e.image_id):
                out.append(e)
            j += 1
        return out, (events[j - 1].position(self.epoch) if j > i else pos)
