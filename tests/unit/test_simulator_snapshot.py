"""A living catalog saved and resumed (``syncer demo`` between runs) is the same catalog: the
same listing, the same uploads in flight in the same order, and the same next image id."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from syncer.simulator import REMOVED, Catalog, snapshot

REGIONS = ("cn-north-4", "ap-southeast-1")
TYPES = ("gold", "private", "shared", "market")


def lived(clock: list[float]) -> Catalog:
    cat = Catalog(regions=REGIONS, images_per_partition=30, seed=5, clock=lambda: clock[0])
    rng = random.Random(1)
    for _ in range(40):
        clock[0] += 1
        cat.step(3.0, rng)
    victim = cat.images("cn-north-4", "gold")[0]["id"]
    cat.update("cn-north-4", victim, min_ram=REMOVED, __odd={"nested": [1, None]})
    return cat


def load(path: Path, **overrides: object) -> tuple[Catalog, int] | None:
    params: dict[str, object] = {
        "regions": REGIONS,
        "image_types": TYPES,
        "images_per_partition": 30,
        "seed": 5,
    }
    params.update(overrides)
    return snapshot.load(path, **params)  # type: ignore[arg-type]


def test_a_saved_catalog_resumes_exactly(tmp_path: Path) -> None:
    clock = [1_700_000_000.0]
    cat = lived(clock)
    assert cat.changes > 100
    path = tmp_path / "catalog.json"
    snapshot.save(path, cat, 30, generation=3)
    loaded = load(path)
    assert loaded is not None
    again, generation = loaded
    assert generation == 3 and again.changes == cat.changes
    for region in REGIONS:
        for t in TYPES:
            assert again.images(region, t) == cat.images(region, t), (region, t)
            assert list(again.partition(region, t).in_flight) == list(
                cat.partition(region, t).in_flight
            )
    assert "min_ram" not in again.get("cn-north-4", cat.images("cn-north-4", "gold")[0]["id"])
    # life goes on identically: the same next ids, statuses and indexes
    again.clock = cat.clock
    clock[0] += 5
    rng_a, rng_b = random.Random(9), random.Random(9)
    for _ in range(10):
        cat.step(2.0, rng_a)
        again.step(2.0, rng_b)
    for region in REGIONS:
        for t in TYPES:
            assert again.images(region, t) == cat.images(region, t)
    assert cat.create("cn-north-4", "gold") == again.create("cn-north-4", "gold")


def test_no_snapshot_and_other_parameters(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    assert load(path) is None
    snapshot.save(path, lived([1_700_000_000.0]), 30)
    with pytest.raises(snapshot.SnapshotMismatch, match="images_per_partition 30"):
        load(path, images_per_partition=31)
    with pytest.raises(snapshot.SnapshotMismatch, match="regions"):
        load(path, regions=("cn-north-4",))
    path.write_bytes(b"{not json")
    with pytest.raises(ValueError, match="not a catalog snapshot"):
        load(path)
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.json"]  # no temporary left
