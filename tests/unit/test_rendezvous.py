"""Rendezvous ownership: every replica computes the same owners; a leaving replica moves only
its own partitions; partitions spread over the replicas."""

from __future__ import annotations

import uuid

from syncer.daemon.membership import rendezvous
from syncer.sync.partitions import Partition

PARTITIONS = [
    Partition(f"region-{r}", t) for r in range(5) for t in ("gold", "private", "shared", "market")
]


def owners(replicas: list[uuid.UUID]) -> dict[Partition, uuid.UUID]:
    return {p: max(replicas, key=lambda r: rendezvous(r, p)) for p in PARTITIONS}


def test_owners_do_not_depend_on_the_order_of_the_list() -> None:
    replicas = [uuid.UUID(int=i * 7919 + 1) for i in range(3)]
    assert owners(replicas) == owners(list(reversed(replicas)))


def test_a_leaving_replica_moves_only_its_own_partitions() -> None:
    replicas = [uuid.UUID(int=i * 104729 + 3) for i in range(4)]
    before = owners(replicas)
    gone = replicas[1]
    after = owners([r for r in replicas if r != gone])
    moved = {p for p in PARTITIONS if before[p] != after[p]}
    assert moved == {p for p in PARTITIONS if before[p] == gone}
    assert moved, "the replica owned nothing: a weak example"


def test_partitions_spread_over_every_replica() -> None:
    replicas = [uuid.UUID(int=(i + 1) * 2654435761) for i in range(3)]
    counts = {r: 0 for r in replicas}
    for owner in owners(replicas).values():
        counts[owner] += 1
    assert all(n > 0 for n in counts.values()), counts
