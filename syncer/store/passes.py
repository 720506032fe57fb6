"""One partition pass against PostgreSQL: lease, run, page writer and tombstones put together.

A pass holds one connection for its whole life (its temp tables live there: the staged page,
the page's events, the ids a full sweep saw). In one transaction it takes the partition's lease
(``leases.py``: at most one pass per partition, across replicas and modes), closes the runs a
previous holder left open, and opens its own run (``runs.py``). Pages go through the page
writer (``page_writer.py``); a complete full sweep ends with the tombstone policy
(``tombstones.py``). Every transaction that writes is fenced by the lease. On the way out the
run is closed as ok or failed (with a one-line reason) and the lease released.

The delta watermark moves only when a pass COMPLETES, to a point its listing provably covered
(``covered_from``: see syncer/sync/engine.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from syncer.errors import DatabaseError, SyncerError
from syncer.store import leases
from syncer.store.leases import THIS_PROCESS, LeaseLost, PartitionBusy, Replica
from syncer.store.page_writer import EVENT_LOCK_KEY, PageWriter
from syncer.store.pool import SESSION_ERRORS, describe_session_error
from syncer.store.queries import sql
from syncer.store.runs import Mode, PassCounts, finish_run, open_run
from syncer.store.tombstones import SweepVerdict, judge_absences

__all__ = [
    "EVENT_LOCK_KEY",
    "LeaseLost",
    "Mode",
    "PartitionBusy",
    "PartitionPass",
    "PassCounts",
    "SweepVerdict",
    "partition_pass",
]


@dataclass(kw_only=True)
class PartitionPass(PageWriter):
    started_at: datetime  # of its run (the database's clock)
    watermark: datetime | None
    last_full_sweep_at: datetime | None
    note: str | None = None

    async def complete_full_sweep(
        self, *, missed_sweeps_to_delete: int, min_ratio: float, covered_from: datetime
    ) -> SweepVerdict:
        """The listing was COMPLETE: judge absences and move the delta watermark to
        ``covered_from`` (a moment before the listing began, in the API's clock)."""
        verdict = await judge_absences(
            self,
            missed_sweeps_to_delete=missed_sweeps_to_delete,
            min_ratio=min_ratio,
            started_at=self.started_at,
            last_full_sweep_at=self.last_full_sweep_at,
            covered_from=covered_from,
        )
        self.note = verdict.skipped_reason
        return verdict

    async def complete_delta(self, *, covered_from: datetime) -> None:
        """The delta listing was COMPLETE: the next one starts at ``covered_from``."""
        async with self.conn.transaction():
            await self.conn.execute(
                sql("record_delta"), self.region, self.image_type, self.started_at, covered_from
            )
            await leases.fence(self.conn, self.lease)


def _usable(conn: asyncpg.Connection) -> bool:
    """Open, and still ours (the pool takes back a connection whose server side died)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def _reason(e: BaseException, lease: leases.Lease) -> str:
    if lease.lost is not None:
        return lease.lost
    if isinstance(e, asyncio.CancelledError):
        return "cancelled (shutdown)"
    if isinstance(e, SyncerError):
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, SESSION_ERRORS):
        return f"database: {describe_session_error(e)}"
    return f"internal error: {type(e).__name__}: {e}"


async def _acquire_connection(
    pool: asyncpg.Pool, partition: str, wait: float
) -> asyncpg.Connection:
    try:
        conn: asyncpg.Connection = await pool.acquire(timeout=wait)
    except TimeoutError as e:
        raise DatabaseError(
            f"partition {partition}: no database connection free within {wait:g}s"
        ) from e
    except SESSION_ERRORS as e:
        raise DatabaseError(
            f"partition {partition}: cannot get a database connection: {describe_session_error(e)}"
        ) from e
    return conn


@contextlib.asynccontextmanager
async def partition_pass(
    pool: asyncpg.Pool,
    region: str,
    image_type: str,
    mode: Mode,
    *,
    replica: Replica = THIS_PROCESS,
    lease_ttl: float = leases.DEFAULT_TTL,
    control: asyncpg.Pool | None = None,
    acquire_timeout: float = 30.0,
) -> AsyncIterator[PartitionPass]:
    """Take the partition's lease, open its ``running`` row, keep the lease renewed (on
    ``control``, default ``pool``), and on the way out close the run as ok/failed and release
    the lease.

    Raises PartitionBusy when another pass holds the partition. An exception inside the block
    marks the run failed (with its one-line reason) and propagates; when the lease is lost the
    block is cancelled and LeaseLost raised instead.
    """
    control = control or pool
    conn = await _acquire_connection(pool, f"{region}/{image_type}", acquire_timeout)
    lease: leases.Lease | None = None
    try:
        await conn.execute(sql("create_work_tables"))
        async with conn.transaction():
            lease = await leases.acquire(conn, region, image_type, mode, replica, lease_ttl)
            run = await open_run(conn, region, image_type, mode, replica.worker)
            await leases.tie(conn, lease, run["id"])
        state = await conn.fetchrow(sql("partition_state"), region, image_type)
        p = PartitionPass(
            conn,
            region,
            image_type,
            mode,
            run["id"],
            lease,
            started_at=run["started_at"],
            watermark=state["watermark"],
            last_full_sweep_at=state["last_full_sweep_at"],
        )
        try:
            async with leases.kept(lease, control):
                yield p
        except BaseException as e:
            message = _reason(e, lease)
            # on the pass's own session, or (when that died) on another one of the pool
            for session in (conn, control) if _usable(conn) else (control,):
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        asyncio.wait_for(
                            finish_run(
                                session,
                                p.run_id,
                                "failed",
                                p.counts,
                                error=message[:2000],
                                note=p.note,
                            ),
                            10,
                        )
                    )
                    break
            if lease.cancelled_owner and isinstance(e, asyncio.CancelledError):
                task = asyncio.current_task()
                if task is not None and task.uncancel() == 0:  # the keeper's cancel alone
                    raise LeaseLost(lease.lost or "lease lost") from None
            raise
        else:
            await finish_run(conn, p.run_id, "ok", p.counts, note=p.note)
    finally:
        try:
            if lease is not None:  # by token: harmless when another replica took it over
                for session in (conn, control) if _usable(conn) else (control,):
                    with contextlib.suppress(Exception):
                        await asyncio.shield(asyncio.wait_for(leases.release(session, lease), 10))
                        break
        finally:
            with contextlib.suppress(asyncpg.InterfaceError):  # already taken back (it died)
                await pool.release(conn)
