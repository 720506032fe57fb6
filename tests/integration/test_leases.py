"""Partition leases: one pass per partition across replicas, fenced writes, takeover of a dead
replica's partitions, and its runs closed."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from syncer.records import digest_page
from syncer.store import leases
from syncer.store.leases import LeaseLost, PartitionBusy, Replica
from syncer.store.passes import partition_pass
from syncer.store.pool import open_pool

REGION, TYPE = "cn-north-4", "private"


def page(start: int, n: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "id": f"img-{i:04d}",
            "name": f"image {i}",
            "status": "active",
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
        }
        for i in range(start, start + n)
    ]


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await open_pool(db, size=6)
    yield p
    await p.close()


async def expire_lease(pool: asyncpg.Pool) -> None:
    await pool.execute("UPDATE ims.partition_leases SET expires_at = now() - interval '1 second'")


async def test_a_pass_holds_the_partition_for_every_replica_and_mode(pool: asyncpg.Pool) -> None:
    async with partition_pass(pool, REGION, TYPE, "full", replica=Replica()):
        for mode in ("full", "delta"):
            with pytest.raises(PartitionBusy):
                async with partition_pass(pool, REGION, TYPE, mode, replica=Replica()):  # type: ignore[arg-type]
                    pass
        holder = await pool.fetchrow("SELECT holder, mode, run_id FROM ims.partition_leases")
        assert holder["mode"] == "full" and holder["run_id"] is not None
    # released at the end
    assert await pool.fetchval("SELECT count(*) FROM ims.partition_leases") == 0


async def test_a_pass_that_lost_its_lease_writes_nothing_more(pool: asyncpg.Pool) -> None:
    """Replica A's lease expires (it froze, or lost the database for longer than the TTL) and
    B takes the partition over: A's next page is refused by the fence and rolled back."""
    a, b = Replica(), Replica()
    with pytest.raises(LeaseLost, match="lease lost"):
        async with partition_pass(pool, REGION, TYPE, "full", replica=a, lease_ttl=60) as pa:
            await pa.apply_page(digest_page(page(0)))
            await expire_lease(pool)
            async with partition_pass(pool, REGION, TYPE, "full", replica=b, lease_ttl=60) as pb:
                await pb.apply_page(digest_page(page(100)))
                b_holds = await pool.fetchval("SELECT holder_id FROM ims.partition_leases")
            await pa.apply_page(digest_page(page(3)))  # refused
    assert b_holds == b.replica_id
    ids = {r["image_id"] for r in await pool.fetch("SELECT image_id FROM ims.images")}
    assert ids == {p["id"] for p in page(0) + page(100)}
    runs = await pool.fetch("SELECT worker, outcome, error FROM ims.sync_runs ORDER BY id")
    assert [r["outcome"] for r in runs] == ["failed", "ok"]
    assert "replica gone" in runs[0]["error"]  # closed by B when it took over


async def test_a_lease_that_cannot_be_renewed_stops_its_pass(db: str, pool: asyncpg.Pool) -> None:
    """The renewals go through a control pool that is gone: before the lease can expire the
    pass is cancelled and ends with LeaseLost (and a later pass may take the partition)."""
    control = await open_pool(db, size=1)
    await control.close()
    began = asyncio.get_running_loop().time()
    with pytest.raises(LeaseLost, match="could not renew"):
        async with partition_pass(pool, REGION, TYPE, "full", lease_ttl=1.5, control=control):
            await asyncio.sleep(10)
    assert asyncio.get_running_loop().time() - began < 5
    await asyncio.sleep(0.2)
    async with partition_pass(pool, REGION, TYPE, "full"):
        pass


async def test_runs_of_a_gone_replica_are_reaped(pool: asyncpg.Pool) -> None:
    ghost = Replica(replica_id=uuid.uuid4(), host="elsewhere", pid=1)
    with pytest.raises(asyncio.CancelledError):
        async with partition_pass(pool, REGION, TYPE, "full", replica=ghost, lease_ttl=60):
            raise asyncio.CancelledError  # stands for a SIGKILL: nothing closes the run...
    await pool.execute("UPDATE ims.sync_runs SET outcome = 'running', error = NULL")
    await pool.execute(
        "INSERT INTO ims.partition_leases (region, image_type, holder_id, holder, token, mode,"
        " run_id, expires_at) SELECT $1, $2, $3, 'elsewhere:1', gen_random_uuid(), 'full', id,"
        " now() + interval '60 seconds' FROM ims.sync_runs",
        REGION,
        TYPE,
        ghost.replica_id,
    )
    assert await leases.reap_runs(pool) == []  # its lease is still valid
    await expire_lease(pool)
    reaped = await leases.reap_runs(pool)
    assert [r["worker"] for r in reaped] == [ghost.worker]
    run = await pool.fetchrow("SELECT outcome, error FROM ims.sync_runs")
    assert run["outcome"] == "failed" and run["error"].startswith("replica gone: elsewhere:1")


async def test_dead_processes_of_this_host_are_retired_at_once(pool: asyncpg.Pool) -> None:
    me = Replica()
    dead = Replica(host=socket.gethostname(), pid=2**22 + 17)  # no such pid
    alive = Replica(host=socket.gethostname(), pid=1)  # init: runs
    for r in (dead, alive):
        await leases.heartbeat(pool, r, 30)
    async with partition_pass(pool, REGION, TYPE, "full", replica=dead, lease_ttl=60):
        pass
    await pool.execute(
        "INSERT INTO ims.partition_leases (region, image_type, holder_id, holder,"
        " token, mode, expires_at) VALUES ($1, 'gold', $2, 'x', gen_random_uuid(),"
        " 'full', now() + interval '60 seconds')",
        REGION,
        dead.replica_id,
    )
    gone = await leases.retire_dead_neighbours(pool, me)
    assert gone == [dead.worker]
    live = {r["replica_id"] for r in await leases.heartbeat(pool, me, 30)}
    assert live == {me.replica_id, alive.replica_id}
    assert await pool.fetchval(
        "SELECT expires_at <= now() FROM ims.partition_leases WHERE holder_id = $1",
        dead.replica_id,
    )
