"""The simulated image catalog: compact records, sorted indexes, and the changes a test scripts.

A partition is ``(region, image_type)``. Each keeps its images by id and, per sort key, a
``SortedList`` of order keys — ``(sort value, created_at, id)``, total because ids are unique —
so that a marker is resolved by bisection and a page costs the same in a catalog of ten thousand
images as in one of a million. The ``created_at`` index and an ``updated_at`` index are kept
from the start; the indexes for the other sort keys are built on first use.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import orjson
from sortedcontainers import SortedList

from syncer.simulator.generate import (
    DEFAULT_TENANT_PROJECT_ID,
    IMAGE_TYPES,
    MUTABLE_KEYS,
    SPAN_END,
    SPAN_START,
    TypeShape,
    image_hash,
    iso,
    new_image_id,
)

SORT_KEYS: Final = ("name", "container_format", "disk_format", "status", "id", "size", "created_at")
_CORE: Final = frozenset(("id", "name", "status", "created_at", "updated_at", "active_at"))
_READ_ONLY: Final = frozenset(("id", "created_at", "updated_at"))


class RenderCache:
    """Serialized objects by image id, shared by a catalog's partitions and bounded.

    A page body is then a join of cached byte strings: serving stays far cheaper than syncing,
    so benchmarks measure the syncer, not the simulator. An image's entry is dropped whenever
    the image changes (every change goes through ``Partition.add``/``remove``). When the cache
    is full the oldest quarter is evicted, so memory stays bounded for a 1M-image catalog.
    ``limit <= 0`` turns it off.
    """

    def __init__(self, limit: int = 250_000) -> None:
        self.limit = limit
        self.entries: dict[str, bytes] = {}

    def put(self, image_id: str, body: bytes) -> None:
        if self.limit <= 0:  # off
            return
        entries = self.entries
        if len(entries) >= self.limit:
            for key in list(itertools.islice(entries, max(1, self.limit // 4))):
                del entries[key]
        entries[image_id] = body


class _Missing:
    """The field is absent from the object (as opposed to JSON null)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __copy__(self) -> _Missing:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Missing:
        return self


MISSING: Final = _Missing("MISSING")
#: ``Catalog.update(region, id, some_field=REMOVED)`` takes a field out of the object.
REMOVED: Final = _Missing("REMOVED")

OrderKey = tuple[Any, ...]


class Image:
    """One image, compactly: the core fields; everything else is composed on demand.

    ``name`` is None while the image has its generated name (derived from the id).
    """

    __slots__ = ("active", "created", "deleted_at", "id", "name", "over", "status", "updated")

    def __init__(
        self, image_id: str, name: str | None, status: str, created: int, updated: int
    ) -> None:
        self.id = image_id
        self.name = name
        self.status = status
        self.created = created
        self.updated = updated
        self.active: int | None = created if status == "active" else None
        self.over: dict[str, Any] | None = None
        self.deleted_at: int | None = None


def sort_value(v: Any) -> tuple[int, Any]:
    """Makes any JSON value comparable: absent/null first, then numbers, then strings."""
    if v is MISSING or v is None:
        return (0, 0)
    if isinstance(v, bool | int | float):
        return (1, v)
    if isinstance(v, str):
        return (2, v)
    return (3, repr(v))


class Partition:
    """The images of one ``(region, image_type)`` and their indexes."""

    def __init__(self, region: str, shape: TypeShape, cache: RenderCache | None = None) -> None:
        self.region = region
        self.cache = cache if cache is not None else RenderCache()
        self.image_type = shape.image_type
        self.shape = shape
        self.images: dict[str, Image] = {}
        self.indexes: dict[str, SortedList] = {}
        self._by_updated: SortedList | None = None
        # queued/saving images, least recently changed first: where life moves statuses on
        self.in_flight: dict[str, None] = {}

    # ---- field access ------------------------------------------------------------------

    def name(self, img: Image) -> str:
        return img.name if img.name is not None else self.shape.name(image_hash(img.id))

    def value(self, img: Image, key: str) -> Any:
        """One field of the object as the API would send it (``MISSING`` if absent)."""
        if img.over is not None and key in img.over:
            v = img.over[key]
            return MISSING if v is REMOVED else v
        if key in _CORE:
            if key == "id":
                return img.id
            if key == "name":
                return self.name(img)
            if key == "status":
                return img.status
            if key == "created_at":
                return iso(img.created)
            if key == "updated_at":
                return iso(img.updated)
            return MISSING if img.active is None else iso(img.active)
        shape = self.shape
        h = image_hash(img.id)
        if key in shape.derived_keys:
            d = shape.derived(img.id, h)
            if key in d:
                return d[key]
        profile = shape.profile(h)
        if key in profile:
            return profile[key]
        return shape.base.get(key, MISSING)

    def render(self, img: Image) -> dict[str, Any]:
        """The whole object, exactly as the API returns it (a fresh dict each time)."""
        return self._compose(img, copy_mutable=True)

    def render_json(self, img: Image) -> bytes:
        """The object serialized as the API sends it (cached until the image changes)."""
        body = self.cache.entries.get(img.id)
        if body is None:
            # orjson's result keeps its whole growth buffer (about 8 KB here); an exact copy
            # makes a cached object cost its size (about 1.3 KB)
            body = memoryview(orjson.dumps(self._compose(img, copy_mutable=False))).tobytes()
            self.cache.put(img.id, body)
        return body

    def _compose(self, img: Image, *, copy_mutable: bool) -> dict[str, Any]:
        shape = self.shape
        h = image_hash(img.id)
        d = dict(shape.base)
        d.update(shape.profile(h))
        d.update(shape.derived(img.id, h))
        d["id"] = img.id
        d["name"] = img.name if img.name is not None else shape.name(h)
        d["status"] = img.status
        d["created_at"] = iso(img.created)
        d["updated_at"] = iso(img.updated)
        if img.active is not None:
            d["active_at"] = iso(img.active)
        if img.deleted_at is not None:
            d["deleted"] = True
            d["deleted_at"] = iso(img.deleted_at)
        if copy_mutable:  # the layers share their lists and dicts: hand out copies
            for k in MUTABLE_KEYS:
                if k in d:
                    d[k] = copy.deepcopy(d[k])
        if img.over:
            for k, v in img.over.items():
                if v is REMOVED:
                    d.pop(k, None)
                else:
                    d[k] = copy.deepcopy(v) if copy_mutable and isinstance(v, list | dict) else v
        return d

    def member_status(self, img: Image) -> str | None:
        return self.shape.member_status(self.value(img, "owner"), image_hash(img.id))

    # ---- order -------------------------------------------------------------------------

    def order_key(self, img: Image, sort_key: str) -> OrderKey:
        if sort_key == "created_at":
            return (img.created, img.id)
        if sort_key == "id":
            return (img.id,)
        return (sort_value(self.value(img, sort_key)), img.created, img.id)

    def index(self, sort_key: str) -> SortedList:
        """The order index for ``sort_key``, built on first use."""
        idx = self.indexes.get(sort_key)
        if idx is None:
            idx = SortedList(self.order_key(img, sort_key) for img in self.images.values())
            self.indexes[sort_key] = idx
        return idx

    @property
    def by_updated(self) -> SortedList:
        """``(updated, id)`` keys, built on first use (delta queries)."""
        if self._by_updated is None:
            self._by_updated = SortedList((img.updated, img.id) for img in self.images.values())
        return self._by_updated

    def add(self, img: Image) -> None:
        self.cache.entries.pop(img.id, None)
        self.images[img.id] = img
        for sort_key, idx in self.indexes.items():
            idx.add(self.order_key(img, sort_key))
        if self._by_updated is not None:
            self._by_updated.add((img.updated, img.id))
        if img.status in ("queued", "saving"):
            self.in_flight[img.id] = None

    def remove(self, img: Image) -> None:
        self.cache.entries.pop(img.id, None)
        del self.images[img.id]
        for sort_key, idx in self.indexes.items():
            idx.remove(self.order_key(img, sort_key))
        if self._by_updated is not None:
            self._by_updated.remove((img.updated, img.id))
        self.in_flight.pop(img.id, None)

    def change(self, img: Image, mutate: Callable[[Image], None]) -> None:
        """Apply ``mutate`` to ``img`` keeping every index right."""
        self.remove(img)
        mutate(img)
        self.add(img)


class Catalog:
    """Seeded, deterministic images for ``regions × image_types``, changeable at will.

    ``clock`` (seconds since the epoch) dates every change; tests may replace it at any time.
    """

    def __init__(
        self,
        *,
        regions: Sequence[str],
        images_per_partition: int,
        seed: int = 0,
        image_types: Sequence[str] = IMAGE_TYPES,
        clock: Callable[[], float] = time.time,
        tenant_project_id: str = DEFAULT_TENANT_PROJECT_ID,
        deleted_visible_seconds: float = 0,
    ) -> None:
        if not regions:
            raise ValueError("a catalog needs at least one region")
        unknown = set(image_types) - set(IMAGE_TYPES)
        if unknown:
            raise ValueError(f"unknown image types: {sorted(unknown)}")
        if images_per_partition < 0:
            raise ValueError("images_per_partition must be >= 0")
        self.regions = tuple(regions)
        self.image_types = tuple(image_types)
        self.seed = seed
        self.clock = clock
        self.tenant_project_id = tenant_project_id
        self.deleted_visible_seconds = deleted_visible_seconds
        self.changes = 0
        self._rng = random.Random(f"catalog/{seed}/changes")
        self._purge: list[tuple[float, str, str]] = []  # (when, region, id) for deleted-visible
        self.shapes = {t: TypeShape(t, seed, tenant_project_id) for t in self.image_types}
        self.partitions: dict[tuple[str, str], Partition] = {}
        self.render_cache = RenderCache()
        for region in self.regions:
            for image_type in self.image_types:
                part = Partition(region, self.shapes[image_type], self.render_cache)
                self._generate(part, images_per_partition)
                self.partitions[(region, image_type)] = part

    # ---- generation --------------------------------------------------------------------

    def _generate(self, part: Partition, n: int) -> None:
        rng = random.Random(f"catalog/{self.seed}/{part.region}/{part.image_type}")
        rnd, expo = rng.random, rng.expovariate
        mean_gap = max(1, (SPAN_END - SPAN_START) // max(n, 1))
        t = SPAN_START + rng.randrange(mean_gap)
        personal = part.image_type in ("private", "shared")
        images = part.images
        for _ in range(n):
            # bursts: about a third of the images share their second with the previous one
            if rnd() >= 0.35:
                t = min(SPAN_END, t + 1 + int(expo(1.0) * mean_gap * 1.4))
            image_id = new_image_id(rng)
            while image_id in images:  # pragma: no cover - 122 random bits
                image_id = new_image_id(rng)
            roll = rnd()
            updated = t if roll < 0.5 else min(SPAN_END, t + int(roll * 9e6))
            status = "active"
            if personal and roll < 0.03:  # a few uploads in flight or failed
                status = ("queued", "saving", "killed")[int(roll * 100)]
            images[image_id] = Image(image_id, None, status, t, updated)
            if status in ("queued", "saving"):
                part.in_flight[image_id] = None
        part.indexes["created_at"] = SortedList((img.created, img.id) for img in images.values())

    # ---- reading -----------------------------------------------------------------------

    def now(self) -> int:
        return int(self.clock())

    def partition(self, region: str, image_type: str) -> Partition:
        try:
            return self.partitions[(region, image_type)]
        except KeyError:
            raise KeyError(f"no partition {region}/{image_type}") from None

    def find(self, region: str, image_id: str) -> tuple[Partition, Image] | None:
        self.purge_expired()
        for image_type in self.image_types:
            part = self.partitions.get((region, image_type))
            if part is not None and (img := part.images.get(image_id)) is not None:
                return part, img
        return None

    def images(self, region: str, image_type: str) -> list[dict[str, Any]]:
        """The live listing content of a partition, oldest first (created_at, then id)."""
        self.purge_expired()
        part = self.partition(region, image_type)
        return [part.render(part.images[key[1]]) for key in part.index("created_at")]

    def count(self, region: str, image_type: str) -> int:
        return len(self.partition(region, image_type).images)

    def get(self, region: str, image_id: str) -> dict[str, Any] | None:
        found = self.find(region, image_id)
        return None if found is None else found[0].render(found[1])

    def member_status(self, region: str, image_id: str) -> str | None:
        """Our member status for a shared image another project owns, else None."""
        found = self.find(region, image_id)
        return None if found is None else found[0].member_status(found[1])

    # ---- changing ----------------------------------------------------------------------

    def _get(self, region: str, image_id: str) -> tuple[Partition, Image]:
        found = self.find(region, image_id)
        if found is None:
            raise KeyError(f"no image {image_id} in {region}")
        return found

    def create(self, region: str, image_type: str, **fields: Any) -> dict[str, Any]:
        """A new image: status ``queued`` (unless given), created_at = updated_at = now."""
        part = self.partition(region, image_type)
        image_id = str(fields.pop("id", "") or new_image_id(self._rng))
        if self.find(region, image_id) is not None:
            raise ValueError(f"image {image_id} already exists in {region}")
        now = self.now()
        name = str(fields.pop("name", "")) or None
        status = str(fields.pop("status", "queued"))
        img = Image(image_id, name, status, now, now)
        img.active = now if status == "active" else None
        for k in _READ_ONLY:
            fields.pop(k, None)
        if fields:
            img.over = {k: copy.deepcopy(v) for k, v in fields.items()}
        part.add(img)
        self.changes += 1
        return part.render(img)

    def update(self, region: str, image_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields (unknown keys welcome; ``REMOVED`` drops one); moves updated_at."""
        bad = _READ_ONLY & fields.keys()
        if bad:
            raise ValueError(f"read-only fields: {sorted(bad)}")
        part, img = self._get(region, image_id)
        now = self.now()

        def mutate(i: Image) -> None:
            for k, v in fields.items():
                if k == "name" and isinstance(v, str):
                    i.name = v
                elif k == "status" and isinstance(v, str):
                    self._status(i, v, now)
                elif k == "active_at" and v is REMOVED:
                    i.active = None
                else:
                    if i.over is None:
                        i.over = {}
                    i.over[k] = copy.deepcopy(v)
            i.updated = now

        part.change(img, mutate)
        self.changes += 1
        return part.render(img)

    @staticmethod
    def _status(img: Image, status: str, now: int) -> None:
        img.status = status
        if status == "active":
            img.active = now

    def set_status(self, region: str, image_id: str, status: str) -> dict[str, Any]:
        """Moves updated_at; ``active`` also sets active_at; ``deleted`` is :meth:`delete`."""
        if status == "deleted":
            self.delete(region, image_id)
            found = self.find(region, image_id)
            return (
                {"id": image_id, "status": "deleted"}
                if found is None
                else found[0].render(found[1])
            )
        part, img = self._get(region, image_id)
        now = self.now()

        def mutate(i: Image) -> None:
            self._status(i, status, now)
            i.updated = now

        part.change(img, mutate)
        self.changes += 1
        return part.render(img)

    def delete(self, region: str, image_id: str) -> None:
        """The image leaves the listing — or, with ``deleted_visible_seconds``, stays listed as
        ``status: deleted`` for that long."""
        part, img = self._get(region, image_id)
        if img.status == "deleted":
            return
        self.changes += 1
        if self.deleted_visible_seconds <= 0:
            part.remove(img)
            return
        now = self.now()

        def mutate(i: Image) -> None:
            i.status = "deleted"
            i.updated = now
            i.deleted_at = now

        part.change(img, mutate)
        heapq.heappush(self._purge, (self.clock() + self.deleted_visible_seconds, region, image_id))

    def purge_expired(self) -> None:
        """Deleted images whose visibility window has passed leave the listing."""
        if not self._purge:
            return
        now = self.clock()
        while self._purge and self._purge[0][0] <= now:
            _, region, image_id = heapq.heappop(self._purge)
            for image_type in self.image_types:
                part = self.partitions.get((region, image_type))
                if part is not None and (img := part.images.get(image_id)) is not None:
                    if img.status == "deleted":
                        part.remove(img)
                    break

    def step(self, rate: float, rng: random.Random) -> None:
        """One tick of life: about ``rate`` changes per partition (see ``life.step``)."""
        from syncer.simulator.life import step

        step(self, rate, rng)

    def mutate(self, changes: int, rng: random.Random) -> dict[str, int]:
        """Exactly ``changes`` changes spread evenly over every partition (see
        ``life.mutate``); how many of each kind were made."""
        from syncer.simulator.life import mutate

        return dict(mutate(self, changes, rng))

    def iter_partitions(self, region: str) -> Iterator[Partition]:
        for image_type in self.image_types:
            yield self.partitions[(region, image_type)]
