"""One page of a listing: resolve the marker by bisection, walk the order index forward.

Cost per page is ``O(log n + walked)``, where *walked* is the number of images looked at to
fill the page: the page size when the only filters are the partition (``__imagetype``) and a
``created_at`` range under ``sort_key=created_at`` (both become index bounds). Other filters are
applied while walking, so a filter that matches few images costs more (up to the partition).
An ``updated_at`` range that selects at most an eighth of the partition (the delta case) is
served from the ``updated_at`` index instead: its matches are collected, ordered, and bisected.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from syncer.simulator.catalog import Catalog, Image, OrderKey, Partition
from syncer.simulator.query import Query, QueryError


@dataclass(frozen=True, slots=True)
class Page:
    hits: list[tuple[Partition, Image]]
    next_marker: str | None  # the last id of a full page
    walked: int

    @property
    def images(self) -> list[dict[str, Any]]:
        """The page's objects as fresh dicts."""
        return [part.render(img) for part, img in self.hits]

    def images_json(self) -> bytes:
        """The page's ``images`` array, serialized (from the render cache)."""
        return b"[" + b",".join([part.render_json(img) for part, img in self.hits]) + b"]"


def _bounds(
    ranges: list[tuple[str, int]],
) -> tuple[OrderKey | None, OrderKey | None, bool]:
    """``(op, t)`` filters on created_at → exclusive key bounds over ``(created, id)`` keys
    (``(t,)`` sorts before every ``(t, id)``), and whether the range is empty."""
    lo: OrderKey | None = None
    hi: OrderKey | None = None
    for op, t in ranges:
        new_lo = {"gt": (t + 1,), "gte": (t,), "eq": (t,)}.get(op)
        new_hi = {"lt": (t,), "lte": (t + 1,), "eq": (t + 1,)}.get(op)
        if new_lo is not None and (lo is None or new_lo > lo):
            lo = new_lo
        if new_hi is not None and (hi is None or new_hi < hi):
            hi = new_hi
    return lo, hi, lo is not None and hi is not None and lo >= hi


def _max(a: OrderKey | None, b: OrderKey | None) -> OrderKey | None:
    return b if a is None else a if b is None else max(a, b)


def _min(a: OrderKey | None, b: OrderKey | None) -> OrderKey | None:
    return b if a is None else a if b is None else min(a, b)


def _tagged(keys: Iterable[OrderKey], n: int) -> Iterator[tuple[OrderKey, int]]:
    for key in keys:
        yield key, n


def _walk(
    parts: list[Partition], q: Query, marker_key: OrderKey | None
) -> Iterator[tuple[Partition, Image]]:
    lo: OrderKey | None = None
    hi: OrderKey | None = None
    if q.sort_key == "created_at":
        lo, hi, empty = _bounds(q.created)
        if empty:
            return
    if marker_key is not None:
        if q.desc:
            hi = _min(hi, marker_key)
        else:
            lo = _max(lo, marker_key)
    streams = [
        _tagged(part.index(q.sort_key).irange(lo, hi, inclusive=(False, False), reverse=q.desc), n)
        for n, part in enumerate(parts)
    ]
    merged: Iterable[tuple[OrderKey, int]] = (
        streams[0] if len(streams) == 1 else heapq.merge(*streams, reverse=q.desc)
    )
    for key, n in merged:
        part = parts[n]
        yield part, part.images[key[-1]]


def _candidates(
    parts: list[Partition],
    q: Query,
    marker_key: OrderKey | None,
    found: list[tuple[Partition, Image]],
) -> Iterator[tuple[Partition, Image]]:
    keyed = [(part.order_key(img, q.sort_key), part, img) for part, img in found]
    if marker_key is not None:
        if q.desc:
            keyed = [k for k in keyed if k[0] < marker_key]
        else:
            keyed = [k for k in keyed if k[0] > marker_key]
    keyed.sort(key=lambda k: k[0], reverse=q.desc)
    for _, part, img in keyed:
        yield part, img


def _updated_range(parts: list[Partition], q: Query) -> list[tuple[Partition, Image]] | None:
    """The images an updated_at range selects, if that is cheaper than walking."""
    lo, hi, empty = _bounds(q.updated)
    if empty:
        return []
    if lo is None and hi is None:
        return None
    total = sum(len(p.images) for p in parts)
    spans = []
    for part in parts:
        bu = part.by_updated
        start = 0 if lo is None else bu.bisect_left(lo)
        stop = len(bu) if hi is None else bu.bisect_left(hi)
        spans.append((part, start, stop))
    if sum(max(0, stop - start) for _, start, stop in spans) * 8 > max(total, 64):
        return None
    return [
        (part, part.images[key[1]])
        for part, start, stop in spans
        for key in part.by_updated.islice(start, stop)
    ]


def list_page(
    catalog: Catalog,
    region: str,
    q: Query,
    *,
    max_limit: int = 1000,
    unknown_marker: Literal["error", "empty"] = "error",
) -> Page:
    catalog.purge_expired()
    if q.image_type is not None:
        parts = [catalog.partition(region, q.image_type)]
    else:
        parts = list(catalog.iter_partitions(region))
    limit = min(q.limit, max_limit)
    marker_key: OrderKey | None = None
    if q.marker is not None:
        found = catalog.find(region, q.marker)
        if found is None:
            if unknown_marker == "empty":
                return Page([], None, 0)
            raise QueryError("IMG.0066", "The image id is invalid.")
        marker_key = found[0].order_key(found[1], q.sort_key)
    if limit == 0:
        return Page([], None, 0)

    stream: Iterator[tuple[Partition, Image]]
    if q.image_id is not None:
        one = catalog.find(region, q.image_id)
        found_one = [] if one is None or one[0] not in parts else [one]
        stream = _candidates(parts, q, marker_key, found_one)
    elif (hits_or_none := _updated_range(parts, q)) is not None:
        stream = _candidates(parts, q, marker_key, hits_or_none)
    else:
        stream = _walk(parts, q, marker_key)

    hits: list[tuple[Partition, Image]] = []
    walked = 0
    for part, img in stream:
        walked += 1
        if q.matches(part, img):
            hits.append((part, img))
            if len(hits) == limit:
                break
    next_marker = hits[-1][1].id if len(hits) == limit else None
    return Page(hits, next_marker, walked)
