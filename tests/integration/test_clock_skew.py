"""Clock skew between replicas: whose clock decides whether a lease or a replica still lives?

Two daemons whose processes see different wall clocks cannot be faked here (no faketime), so
the test does the honest equivalent in one process: two replicas, each acting while THIS
process's wall clock (``time.time``, what a skewed host would get wrong) is an hour ahead or
an hour behind, and the database's clock moved for one of them by SQL (a heartbeat stamped an
hour ago, a lease expired). Every decision follows the database's clock and none follows the
process's: a replica whose clock runs ahead cannot steal a live lease, one whose clock runs
behind cannot keep or use an expired one, and membership is judged by heartbeats stamped by
the database. A static check backs it: the lease and membership code reads no wall clock at all
(only ``time.monotonic`` for its own waits), and their SQL stamps with ``clock_timestamp()``.
"""

from __future__ import annotations

import ast
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

import syncer.daemon.membership
import syncer.store.leases
from syncer.records import digest_page
from syncer.store import leases
from syncer.store.leases import LeaseLost, PartitionBusy, Replica
from syncer.store.passes import partition_pass
from syncer.store.pool import open_pool

REGION, TYPE = "cn-north-4", "gold"
HOUR = 3600.0


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await open_pool(db, size=4, server_settings={"jit": "off"})
    yield p
    await p.close()


class SkewedClock:
    """This process's wall clock, off by ``offset`` seconds while set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch, self.real = monkeypatch, time.time

    def set(self, offset: float) -> None:
        self.monkeypatch.setattr(time, "time", lambda: self.real() + offset)
        self.monkeypatch.setattr(time, "time_ns", lambda: int((self.real() + offset) * 1e9))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[SkewedClock]:
    yield SkewedClock(monkeypatch)


def page(n: int) -> list[dict[str, str]]:
    return [
        {"id": f"img-{n}-{i}", "status": "active", "created_at": "2024-01-01T00:00:00Z"}
        for i in range(3)
    ]


async def test_leases_and_membership_follow_the_databases_clock_not_the_replicas(
    pool: asyncpg.Pool, clock: SkewedClock
) -> None:
    a, b = Replica(), Replica()
    ttl = 30.0
    clock.set(-HOUR)  # A runs an hour behind
    assert {r["replica_id"] for r in await leases.heartbeat(pool, a, ttl)} == {a.replica_id}
    with pytest.raises(LeaseLost):
        async with partition_pass(pool, REGION, TYPE, "full", replica=a, lease_ttl=ttl) as pa:
            await pa.apply_page(digest_page(page(0)))

            # B runs an hour ahead: by its clock A's lease (30 s) ran out long ago — it is not
            # out in the database's, so B cannot take the partition, and sees A alive
            clock.set(+HOUR)
            with pytest.raises(PartitionBusy):
                async with partition_pass(pool, REGION, TYPE, "full", replica=b, lease_ttl=ttl):
                    pass
            live = {r["replica_id"] for r in await leases.heartbeat(pool, b, ttl)}
            assert live == {a.replica_id, b.replica_id}

            # A's heartbeat stamped an hour ago, by the database: B sees A gone, whatever B's
            # clock (now an hour behind, where that beat would look fresh)
            await pool.execute(
                "UPDATE ims.replicas SET heartbeat_at = clock_timestamp() - interval '1 hour'"
                " WHERE replica_id = $1",
                a.replica_id,
            )
            clock.set(-HOUR)
            live = {r["replica_id"] for r in await leases.heartbeat(pool, b, ttl)}
            assert live == {b.replica_id}

            # A's lease expired in the database's clock: B (an hour behind, by whose clock the
            # lease still has an hour) takes the partition over, and A — whose own clock says
            # its lease is young — can write nothing more
            await pool.execute(
                "UPDATE ims.partition_leases SET expires_at = clock_timestamp() - interval '1 second'"
            )
            async with partition_pass(pool, REGION, TYPE, "full", replica=b, lease_ttl=ttl) as pb:
                await pb.apply_page(digest_page(page(1)))
            clock.set(-HOUR)
            await pa.apply_page(digest_page(page(2)))  # refused by the fence
    ids = {r[0] for r in await pool.fetch("SELECT image_id FROM ims.image_rows")}
    assert ids == {o["id"] for o in page(0) + page(1)}
    runs = await pool.fetch("SELECT outcome, error FROM ims.sync_runs ORDER BY id")
    assert [r["outcome"] for r in runs] == ["failed", "ok"]


WALL_CLOCKS = {("time", "time"), ("time", "time_ns"), ("datetime", "now"), ("datetime", "utcnow")}


def wall_clock_reads(module: object) -> list[str]:
    path = Path(module.__file__)  # type: ignore[attr-defined]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in WALL_CLOCKS
        ):
            found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "datetime"):
            found += [
                f"{path.name}:{node.lineno} from {node.module} import {a.name}" for a in node.names
            ]
    return found


def test_lease_and_membership_code_reads_no_wall_clock() -> None:
    for module in (syncer.store.leases, syncer.daemon.membership):
        assert wall_clock_reads(module) == [], module
    sql = (Path(syncer.store.leases.__file__).parent / "leases.sql").read_text()
    assert "clock_timestamp()" in sql and "now()" not in sql
