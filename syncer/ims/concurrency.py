"""How many IMS requests may be in flight: adaptive per endpoint, capped across all of them.

Each region endpoint has an AIMD limit: it starts at the ceiling (``api.region_concurrency``),
halves on a throttling answer (429) and grows by one after ``increase_after`` successes in a
row, never below 1 nor above the ceiling. Every request that was already in flight when the
limit was halved belongs to the old *epoch*: its own 429 does not halve the limit again, so one
burst of throttling costs one halving, not one per request. A global semaphore
(``api.max_concurrency``) caps the sum over all endpoints.

Pure asyncio, no I/O: the client reports outcomes, this module only counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


class AdaptiveLimit:
    """An AIMD limit on requests in flight to one endpoint (FIFO among waiters)."""

    def __init__(self, ceiling: int, *, increase_after: int = 8, name: str = "") -> None:
        if ceiling < 1:
            raise ValueError("ceiling must be >= 1")
        if increase_after < 1:
            raise ValueError("increase_after must be >= 1")
        self.name = name
        self.ceiling = ceiling
        self.limit = ceiling
        self.increase_after = increase_after
        self.in_flight = 0
        self.epoch = 0
        self._successes = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch the request starts in."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return self.epoch
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        return self.epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def throttled(self, epoch: int) -> None:
        """A request that started in ``epoch`` was throttled: halve (once per epoch)."""
        self._successes = 0
        if epoch != self.epoch:
            return
        self.epoch += 1
        old, self.limit = self.limit, max(1, self.limit // 2)
        if old != self.limit:
            log.info(
                "IMS concurrency reduced",
                extra={"endpoint": self.name, "limit": self.limit, "previous": old},
            )

    def succeeded(self) -> None:
        self._successes += 1
        if self._successes >= self.increase_after and self.limit < self.ceiling:
            self._successes = 0
            self.limit += 1
            log.debug(
                "IMS concurrency increased", extra={"endpoint": self.name, "limit": self.limit}
            )
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class Ticket:
    """A granted slot: which endpoint limit (if any) and the epoch it started in."""

    limit: AdaptiveLimit | None
    epoch: int

    def throttled(self) -> None:
        if self.limit is not None:
            self.limit.throttled(self.epoch)

    def succeeded(self) -> None:
        if self.limit is not None:
            self.limit.succeeded()


class ConcurrencyGate:
    """Per-endpoint adaptive limits under one global cap."""

    def __init__(self, global_cap: int, endpoint_ceiling: int, *, increase_after: int = 8) -> None:
        if global_cap < 1:
            raise ValueError("global_cap must be >= 1")
        self.global_cap = global_cap
        self.endpoint_ceiling = min(endpoint_ceiling, global_cap)
        self.increase_after = increase_after
        self._global = asyncio.Semaphore(global_cap)
        self._limits: dict[str, AdaptiveLimit] = {}

    def limit_for(self, endpoint: str) -> AdaptiveLimit:
        limit = self._limits.get(endpoint)
        if limit is None:
            limit = AdaptiveLimit(
                self.endpoint_ceiling, increase_after=self.increase_after, name=endpoint
            )
            self._limits[endpoint] = limit
        return limit

    @contextlib.asynccontextmanager
    async def slot(self, endpoint: str | None) -> AsyncIterator[Ticket]:
        """Hold one slot of ``endpoint``'s limit (None: none) and one of the global cap.

        The endpoint slot is taken first, so a request waiting for a busy endpoint does not
        sit on a global slot another region could use.
        """
        limit = self.limit_for(endpoint) if endpoint is not None else None
        epoch = await limit.acquire() if limit is not None else 0
        try:
            async with self._global:
                yield Ticket(limit, epoch)
        finally:
            if limit is not None:
                limit.release()
