"""A living catalog: images are created (queued), move to saving, then active or killed, change
fields, and are deleted, at a given rate. Every change moves ``updated_at`` (whole seconds).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

from syncer.simulator.catalog import REMOVED, Catalog, Partition
from syncer.simulator.generate import PRIVATE_NAMES

# relative weights of what one change is
_CREATE, _TRANSITION, _UPDATE, _DELETE = 0.25, 0.25, 0.35, 0.15


def _count(rate: float, rng: random.Random) -> int:
    """A Poisson-distributed number of events with mean ``rate``."""
    if rate <= 0:
        return 0
    if rate > 30:  # normal approximation, to stay cheap for large rates
        return max(0, round(rng.gauss(rate, math.sqrt(rate))))
    limit, k, p = math.exp(-rate), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _random_live(part: Partition, rng: random.Random) -> str | None:
    idx = part.index("created_at")
    if not idx:
        return None
    for _ in range(4):
        image_id: str = idx[rng.randrange(len(idx))][1]
        if part.images[image_id].status != "deleted":
            return image_id
    return None


def _field_change(part: Partition, image_id: str, rng: random.Random) -> dict[str, Any]:
    img = part.images[image_id]
    choice = rng.randrange(7)
    if choice == 0:
        return {
            "name": PRIVATE_NAMES[rng.randrange(len(PRIVATE_NAMES))].format(n=rng.randrange(10**6))
        }
    if choice == 1:
        return {
            "tags": sorted({f"env.{rng.choice(('prod', 'dev', 'qa'))}", f"rev.{rng.randrange(99)}"})
        }
    if choice == 2:
        return {"__description": rng.choice(("patched", "新的描述", "rotated keys", ""))}
    if choice == 3:
        return {"min_ram": rng.choice((0, 1024, 2048, 8192))}
    if choice == 4:
        return {"__support_highperformance": rng.choice(("true", REMOVED))}
    if choice == 5:  # a field nobody has heard of yet
        return {f"__future_{rng.randrange(3)}": rng.choice(("x", "y", {"nested": [1, 2]}))}
    return {"min_disk": max(40, int(part.value(img, "min_disk") or 40) + 10)}


def change_one(
    catalog: Catalog, region: str, image_type: str, part: Partition, rng: random.Random
) -> str | None:
    """One change in one partition, in life's proportions; what it was (``created``,
    ``transition``, ``updated``, ``deleted``), or None when there was nothing to change."""
    roll = rng.random()
    if roll < _CREATE:
        catalog.create(region, image_type)
        return "created"
    if roll < _CREATE + _TRANSITION and part.in_flight:
        image_id = next(iter(part.in_flight))  # the upload waiting longest
        status = part.images[image_id].status
        new = "saving" if status == "queued" else "active" if rng.random() < 0.85 else "killed"
        catalog.set_status(region, image_id, new)
        return "transition"
    target = _random_live(part, rng)
    if target is None:
        return None
    protected = part.value(part.images[target], "protected") is True
    if roll >= 1 - _DELETE and not protected:
        catalog.delete(region, target)
        return "deleted"
    catalog.update(region, target, **_field_change(part, target, rng))
    return "updated"


def step(catalog: Catalog, rate: float, rng: random.Random) -> None:
    """About ``rate`` changes (Poisson) in each partition of the catalog."""
    for (region, image_type), part in list(catalog.partitions.items()):
        for _ in range(_count(rate, rng)):
            change_one(catalog, region, image_type, part, rng)


def mutate(catalog: Catalog, changes: int, rng: random.Random) -> Counter[str]:
    """Exactly ``changes`` changes (or as many as the catalog allows), spread evenly over every
    partition — round robin, one at a time — each a creation, a status transition, a field
    update or a deletion in life's proportions (deletions never of protected images: those
    become updates). Returns how many of each kind were made."""
    made: Counter[str] = Counter()
    parts = list(catalog.partitions.items())
    idle = 0  # partitions in a row that had nothing to change
    i = 0
    while sum(made.values()) < changes and parts and idle < len(parts):
        (region, image_type), part = parts[i % len(parts)]
        i += 1
        kind = change_one(catalog, region, image_type, part, rng)
        if kind is None:
            idle += 1
            continue
        idle = 0
        made[kind] += 1
    return made
