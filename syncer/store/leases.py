"""Partition leases and the replica registry: PostgreSQL as the only coordinator.

A pass takes its partition's lease (``ims.partition_leases``) in the transaction that opens its
run, so at most one pass runs per partition across every replica and both modes. The lease has
a time to live, counted in the database's clock; while the pass runs a task renews it every
third of that time. Every transaction the pass writes in first *fences*: it renews the lease
and locks its row until COMMIT, and finds nothing when the lease was lost — so a replica that
lost its database connection, froze, or was cut off can never commit after another replica
took the partition over. A lease that cannot be renewed in time cancels its pass.

A replica (a daemon, or one ``syncer sync --once``) beats in ``ims.replicas``; the daemon uses the
live ones to spread partitions, and closes the runs of replicas that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from syncer.errors import SyncerError
from syncer.store.pool import SESSION_ERRORS, describe_session_error
from syncer.store.queries import sql

log = logging.getLogger(__name__)

DEFAULT_TTL = 30.0


class PartitionBusy(SyncerError):
    """Another pass (on this or another replica) holds the partition."""


class LeaseLost(SyncerError):
    """The pass no longer holds its partition's lease: it must not write another row."""


@dataclass(frozen=True)
class Replica:
    """This process as a holder of leases: a unique id, and ``host:pid`` for people."""

    replica_id: uuid.UUID = field(default_factory=uuid.uuid4)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @property
    def worker(self) -> str:
        return f"{self.host}:{self.pid}"


#: The process's identity, shared by every pass it runs (one-shot or daemon).
THIS_PROCESS = Replica()


@dataclass
class Lease:
    region: str
    image_type: str
    token: uuid.UUID
    ttl: float
    previous_holder: str | None = None
    lost: str | None = None  # why, once the pass may no longer write
    cancelled_owner: bool = False  # the keeper cancelled the pass (the lease was lost)

    @property
    def partition(self) -> str:
        return f"{self.region}/{self.image_type}"


async def acquire(
    conn: asyncpg.Connection, region: str, image_type: str, mode: str, replica: Replica, ttl: float
) -> Lease:
    """Take the partition's lease (in the caller's transaction). Raises PartitionBusy."""
    row = await conn.fetchrow(
        sql("acquire_lease"), region, image_type, replica.replica_id, replica.worker, mode, ttl
    )
    if row is None:
        raise PartitionBusy(f"partition {region}/{image_type}: another pass is running")
    return Lease(region, image_type, row["token"], ttl, row["previous_holder"])


async def tie(conn: asyncpg.Connection, lease: Lease, run_id: int) -> None:
    await conn.execute(sql("tie_lease"), lease.token, run_id)


async def fence(conn: asyncpg.Connection, lease: Lease) -> None:
    """Inside a write transaction: prove the lease is still held (and hold it to COMMIT)."""
    if lease.lost is not None or not await conn.fetchval(sql("fence"), lease.token, lease.ttl):
        lease.lost = lease.lost or (
            f"partition {lease.partition}: lease lost (expired, or taken over by another "
            "replica); nothing more is written"
        )
        raise LeaseLost(lease.lost)


async def release(session: asyncpg.Connection | asyncpg.Pool, lease: Lease) -> None:
    await session.execute(sql("release_lease"), lease.token)


@contextlib.asynccontextmanager
async def kept(lease: Lease, pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Renew ``lease`` every ttl/3 while the block runs; cancel the block's task (after noting
    ``lease.lost``) once the lease is lost or cannot be renewed before it would expire."""
    owner = asyncio.current_task()
    assert owner is not None
    task = asyncio.create_task(_renew(lease, pool, owner), name=f"lease {lease.partition}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _renew(lease: Lease, pool: asyncpg.Pool, owner: asyncio.Task[object]) -> None:
    period = lease.ttl / 3
    # the database counts the TTL from when it ran the renewal, which is after we sent it
    valid_until = time.monotonic() + lease.ttl
    while True:
        await asyncio.sleep(period)
        sent = time.monotonic()
        try:
            renewed = await asyncio.wait_for(
                pool.fetchval(sql("renew_lease"), lease.token, lease.ttl), timeout=period
            )
        except SESSION_ERRORS as e:
            if time.monotonic() + period < valid_until - period / 2:
                log.warning(
                    "lease renewal failed; retrying",
                    extra={"partition": lease.partition, "error": describe_session_error(e)},
                )
                continue
            lease.lost = (
                f"partition {lease.partition}: lease lost: could not renew it before it expired "
                f"({describe_session_error(e)})"
            )
        else:
            if renewed:
                valid_until = sent + lease.ttl
                continue
            lease.lost = (
                f"partition {lease.partition}: lease lost: it expired or another replica took "
                "the partition over"
            )
        log.warning("pass stopped: %s", lease.lost, extra={"partition": lease.partition})
        lease.cancelled_owner = True
        owner.cancel()
        return


async def reap_runs(session: asyncpg.Connection | asyncpg.Pool) -> list[asyncpg.Record]:
    """Close as failed the runs whose replica stopped holding their partition."""
    rows: list[asyncpg.Record] = await session.fetch(sql("reap_runs"))
    for r in rows:
        log.warning(
            "closed a run its replica left open",
            extra={
                "partition": f"{r['region']}/{r['image_type']}",
                "run_id": r["id"],
                "worker": r["worker"],
            },
        )
    return rows


async def heartbeat(
    session: asyncpg.Connection | asyncpg.Pool, replica: Replica, ttl: float
) -> list[asyncpg.Record]:
    """This replica lives (registered on its first beat); returns every live replica."""
    rows: list[asyncpg.Record] = await session.fetch(
        sql("heartbeat"), replica.replica_id, replica.worker, replica.host, replica.pid, ttl
    )
    return rows


async def retire(session: asyncpg.Connection | asyncpg.Pool, replica_id: uuid.UUID) -> None:
    """A replica gone for certain: its leases expire now and it leaves the list."""
    await session.execute(sql("retire_replica"), replica_id)


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as someone else
        return True
    return True


async def retire_dead_neighbours(
    session: asyncpg.Connection | asyncpg.Pool, replica: Replica
) -> list[str]:
    """Replicas registered from this host whose process no longer runs (killed, crashed; or
    whose pid is now ours) are certainly gone: retire them now rather than wait for their
    leases to expire. Returns their worker names."""
    gone = []
    for r in await session.fetch(sql("replicas_on_host"), replica.host, replica.replica_id):
        if r["pid"] == replica.pid or not _pid_runs(r["pid"]):
            await retire(session, r["replica_id"])
            gone.append(r["worker"])
    return gone


async def prune_replicas(session: asyncpg.Connection | asyncpg.Pool, older_than: float) -> None:
    await session.execute(sql("prune_replicas"), older_than)


async def since_last_pass(
    session: asyncpg.Connection | asyncpg.Pool, region: str, image_type: str, mode: str
) -> float | None:
    """Seconds since a pass of ``mode`` last started on the partition (None: never)."""
    value = await session.fetchval(sql("since_last_pass"), region, image_type, mode)
    return None if value is None else float(value)
