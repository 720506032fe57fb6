"""A living catalog saved to a file and resumed from it (``syncer demo`` between runs).

The catalog a seed generates is always the same; life then changes it. ``save`` writes the
changed catalog — every image's compact record, the uploads in flight in their order, and the
state of the random generator that names new images — and ``load`` rebuilds exactly that
catalog, so a later run lists what the last one listed and its life goes on from there: the
changes a sync then observes are only the new ones. The file is written atomically (a
temporary sibling renamed into place), so a crash leaves the previous snapshot whole.

For catalogs whose deletions leave the listing at once (``deleted_visible_seconds = 0``, the
default): an image listed as ``deleted`` for a while is not kept as such.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from syncer.simulator.catalog import REMOVED, Catalog, Image

VERSION = 1
_REMOVED = {"__syncer_removed__": True}  # REMOVED in an image's overrides (a JSON stand-in)


class SnapshotMismatch(ValueError):
    """The snapshot was taken of a catalog with other parameters (regions, types, seed, size)."""


def _params(
    regions: Sequence[str], image_types: Sequence[str], images_per_partition: int, seed: int
) -> dict[str, Any]:
    return {
        "regions": list(regions),
        "image_types": list(image_types),
        "images_per_partition": images_per_partition,
        "seed": seed,
    }


def _encode_over(over: dict[str, Any] | None) -> dict[str, Any] | None:
    if over is None:
        return None
    return {k: _REMOVED if v is REMOVED else v for k, v in over.items()}


def _decode_over(over: dict[str, Any] | None) -> dict[str, Any] | None:
    if over is None:
        return None
    return {k: REMOVED if v == _REMOVED else v for k, v in over.items()}


def dumps(catalog: Catalog, images_per_partition: int, *, generation: int = 0) -> bytes:
    """The catalog as bytes (``images_per_partition``: what it was generated with)."""
    parts = {}
    for (region, image_type), part in catalog.partitions.items():
        parts[f"{region}/{image_type}"] = {
            "images": [
                [i.id, i.name, i.status, i.created, i.updated, i.active, _encode_over(i.over)]
                for i in (part.images[key[1]] for key in part.index("created_at"))
            ],
            "in_flight": list(part.in_flight),
        }
    version, internal, gauss = catalog._rng.getstate()
    doc = {
        "version": VERSION,
        **_params(catalog.regions, catalog.image_types, images_per_partition, catalog.seed),
        "generation": generation,
        "changes": catalog.changes,
        "rng": [version, list(internal), gauss],
        "partitions": parts,
    }
    return orjson.dumps(doc)


def save(path: Path, catalog: Catalog, images_per_partition: int, *, generation: int = 0) -> None:
    """Write the snapshot atomically."""
    write(path, dumps(catalog, images_per_partition, generation=generation))


def write(path: Path, data: bytes) -> None:
    """Write ``data`` (from :func:`dumps`) to ``path`` atomically: a temporary sibling, synced,
    renamed into place. Needs no catalog, so it may run in a thread while life goes on."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def loads(
    data: bytes,
    *,
    regions: Sequence[str],
    image_types: Sequence[str],
    images_per_partition: int,
    seed: int,
) -> tuple[Catalog, int]:
    """(the catalog, its generation). Raises SnapshotMismatch when the parameters differ, and
    ValueError when the data is not a snapshot this code reads."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not a catalog snapshot: {e}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ValueError("not a catalog snapshot of this version")
    want = _params(regions, image_types, images_per_partition, seed)
    have = {k: doc.get(k) for k in want}
    if have != want:
        diff = ", ".join(f"{k} {have[k]!r} (now {want[k]!r})" for k in want if have[k] != want[k])
        raise SnapshotMismatch(f"the saved catalog was made with {diff}")
    catalog = Catalog(regions=regions, image_types=image_types, images_per_partition=0, seed=seed)
    for (region, image_type), part in catalog.partitions.items():
        saved = doc["partitions"][f"{region}/{image_type}"]
        for image_id, name, status, created, updated, active, over in saved["images"]:
            img = Image(image_id, name, status, created, updated)
            img.active = active
            img.over = _decode_over(over)
            part.add(img)
        part.in_flight = dict.fromkeys(i for i in saved["in_flight"] if i in part.images)
    version, internal, gauss = doc["rng"]
    catalog._rng.setstate((version, tuple(internal), gauss))
    catalog.changes = int(doc["changes"])
    return catalog, int(doc["generation"])


def load(
    path: Path,
    *,
    regions: Sequence[str],
    image_types: Sequence[str],
    images_per_partition: int,
    seed: int,
) -> tuple[Catalog, int] | None:
    """The saved catalog and its generation, or None when there is no snapshot at ``path``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return loads(
        data,
        regions=regions,
        image_types=image_types,
        images_per_partition=images_per_partition,
        seed=seed,
    )
