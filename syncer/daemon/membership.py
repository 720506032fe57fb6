"""This replica among the others: heartbeat, who is alive, who owns which partition, and
whether the database answers.

Every ``lease_ttl / 3`` the replica beats in ``ims.replicas`` (one statement that also returns
the live replicas), closes the runs of replicas that are gone (their leases expired) and forgets
replicas long dead. Partitions are spread over the live replicas by rendezvous hashing: each
partition's owner is the live replica with the highest hash of (replica, partition), so every
replica computes the same owners from the same list, and when a replica leaves only its own
partitions move.

While the database does not answer, the replica stays up: the database is marked down (one
warning per failed attempt, with the next delay), attempts back off from 1 s to 30 s, and the
pools are refreshed when it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence

import asyncpg

from syncer import metrics
from syncer.store import leases
from syncer.store.leases import Replica
from syncer.store.pool import SESSION_ERRORS, describe_session_error
from syncer.sync.partitions import Partition

log = logging.getLogger(__name__)

BACKOFF_START, BACKOFF_MAX = 1.0, 30.0
FORGET_AFTER = 24 * 3600.0  # replicas silent this long leave ims.replicas


class DatabaseHealth:
    """Up or down, and why; logs each change once."""

    def __init__(self) -> None:
        self.up = False
        self.reason: str | None = "not connected yet"
        self.changed = asyncio.Event()

    def mark_up(self) -> bool:
        """True when this is a change (the database is back)."""
        if self.up:
            return False
        if self.reason != "not connected yet":
            log.warning("database reachable again")
        self.up, self.reason = True, None
        metrics.set_database_up(True)
        self.changed.set()
        return True

    def mark_down(self, reason: str) -> None:
        if self.up:
            log.warning("database unreachable: %s", reason)
        self.up, self.reason = False, reason
        metrics.set_database_up(False)


def rendezvous(replica_id: uuid.UUID, partition: Partition) -> int:
    digest = hashlib.blake2b(f"{replica_id}/{partition.name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Membership:
    def __init__(
        self,
        control: asyncpg.Pool,
        pools: Sequence[asyncpg.Pool],
        replica: Replica,
        ttl: float,
    ) -> None:
        self.control = control
        self.pools = pools  # refreshed when the database comes back
        self.replica = replica
        self.ttl = ttl
        self.health = DatabaseHealth()
        self.live: list[uuid.UUID] = [replica.replica_id]

    def owner(self, partition: Partition) -> uuid.UUID:
        return max(self.live, key=lambda r: rendezvous(r, partition))

    def owns(self, partition: Partition) -> bool:
        return self.owner(partition) == self.replica.replica_id

    async def beat(self) -> None:
        """One heartbeat: live replicas, runs of gone ones closed. Raises on a database error
        (SESSION_ERRORS)."""
        rows = await leases.heartbeat(self.control, self.replica, self.ttl)
        live = sorted({r["replica_id"] for r in rows} | {self.replica.replica_id})
        if live != self.live:
            log.info(
                "replicas",
                extra={"live": len(live), "workers": ",".join(sorted(r["worker"] for r in rows))},
            )
        self.live = live
        await leases.reap_runs(self.control)

    async def join(self) -> None:
        """First contact: retire this host's dead replicas (restarted on the same host, a killed
        predecessor need not wait for its leases to expire), then beat."""
        gone = await leases.retire_dead_neighbours(self.control, self.replica)
        if gone:
            log.warning("retired replicas of this host that no longer run: %s", ", ".join(gone))
        await self.beat()
        await leases.prune_replicas(self.control, FORGET_AFTER)

    async def check(self) -> bool:
        """Beat once, tracking the database's health; True when it answered."""
        try:
            await self.beat()
        except SESSION_ERRORS as e:
            self.health.mark_down(describe_session_error(e))
            return False
        if self.health.mark_up():
            for pool in self.pools:  # sessions from before the outage are dead
                await pool.expire_connections()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Beat every ttl/3 until ``stop``; while the database is down, retry with backoff."""
        delay = BACKOFF_START
        while not stop.is_set():
            began = time.monotonic()
            if await self.check():
                delay = BACKOFF_START
                wait = self.ttl / 3
            else:
                log.warning(
                    "database check failed; retrying",
                    extra={"reason": self.health.reason, "retry_in": delay},
                )
                wait, delay = delay, min(delay * 2, BACKOFF_MAX)
            wait = max(0.0, wait - (time.monotonic() - began))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def leave(self) -> None:
        """A clean stop: out of the list at once, so the others take over without waiting."""
        with contextlib.suppress(*SESSION_ERRORS):
            await asyncio.wait_for(leases.retire(self.control, self.replica.replica_id), 5)
