"""A living catalog: images are created (queued), move to saving, then active or killed, change
fields, and are deleted, at a given rate. Every change moves ``updated_at`` (whole seconds).
"""

from __future__ import annotations

import math
import random
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


def step(catalog: Catalog, rate: float, rng: random.Random) -> None:
    """About ``rate`` changes (Poisson) in each partition of the catalog."""
    for (region, image_type), part in list(catalog.partitions.items()):
        for _ in range(_count(rate, rng)):
            roll = rng.random()
            if roll < _CREATE:
                catalog.create(region, image_type)
                continue
            if roll < _CREATE + _TRANSITION and part.in_flight:
                image_id = next(iter(part.in_flight))  # the upload waiting longest
                status = part.images[image_id].status
                if status == "queued":
                    new = "saving"
                else:
                    new = "active" if rng.random() < 0.85 else "killed"
                catalog.set_status(region, image_id, new)
                continue
            target = _random_live(part, rng)
            if target is None:
                continue
            protected = part.value(part.images[target], "protected") is True
            if roll >= 1 - _DELETE and not protected:
                catalog.delete(region, target)
            else:
                catalog.update(region, target, **_field_change(part, target, rng))
