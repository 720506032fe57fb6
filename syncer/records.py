"""An IMS image object → the typed row syncer stores, plus the raw object and a content hash.

Typed columns are parsed leniently: a missing field becomes NULL, and so does a value that does
not fit its column (a string where a number belongs, ``"²"`` for ``min_ram``, ``"yes"`` for
``protected``, an unparseable time…) — such an image is *unfit*: it is stored all the same, its
``raw`` keeps what the API sent, and the pass counts it (``ims.sync_runs.unfit``) and logs it.
Characters PostgreSQL cannot store (NUL in text or jsonb, lone UTF-16 surrogates) are replaced
by U+FFFD, in the typed columns and in ``raw``, and also make the image unfit. Only an object
without a usable ``id`` is refused (the partition fails; nothing of the page commits).
The content hash covers the object's bytes exactly as the API sent them (``WireImage.raw``), so
any change — including to fields this code does not know — is seen, and an unchanged image costs
one hash. Should the API ever reorder keys or whitespace of an unchanged object, the hash differs
and the row is rewritten once, but no event is made: events compare the objects as ``jsonb``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeGuard

import orjson

from syncer.errors import MalformedResponse
from syncer.ims.wire import WireImage, parse_time, storable, storable_json

# Column order of the staging table (see syncer/store/queries.sql).
COLUMNS = (
    "image_id",
    "name",
    "status",
    "visibility",
    "owner",
    "os_type",
    "platform",
    "os_version",
    "os_bit",
    "disk_format",
    "container_format",
    "min_ram",
    "min_disk",
    "size",
    "image_size",
    "virtual_env_type",
    "protected",
    "tags",
    "enterprise_project_id",
    "created_at",
    "updated_at",
    "active_at",
    "raw",
    "content_hash",
)


class ImageRecord(NamedTuple):
    image_id: str
    name: str | None
    status: str | None
    visibility: str | None
    owner: str | None
    os_type: str | None
    platform: str | None
    os_version: str | None
    os_bit: str | None
    disk_format: str | None
    container_format: str | None
    min_ram: int | None
    min_disk: int | None
    size: int | None
    image_size: int | None
    virtual_env_type: str | None
    protected: bool | None
    tags: list[str] | None
    enterprise_project_id: str | None
    created_at: datetime | None
    updated_at: datetime | None
    active_at: datetime | None
    raw: bytes
    content_hash: bytes


_INT32 = 2**31 - 1
_INT64 = 2**63 - 1
_ASCII_INT = re.compile(r"[+-]?[0-9]+")


def usable_id(value: Any) -> TypeGuard[str]:
    """A non-blank string of at most 255 characters PostgreSQL can store."""
    return (
        isinstance(value, str)
        and bool(value.strip())
        and len(value) <= 255
        and storable(value) is value
    )


class _Fields:
    """Typed values of one object; notes the keys whose present value did not fit."""

    __slots__ = ("get", "unfit")

    def __init__(self, obj: dict[str, Any]) -> None:
        self.get = obj.get
        self.unfit: list[str] = []

    def text(self, key: str) -> str | None:
        v = self.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            self.unfit.append(key)
            return None
        clean = storable(v)
        if clean is not v:
            self.unfit.append(key)
        return clean

    def integer(self, key: str, limit: int) -> int | None:
        v = self.get(key)
        if v is None:
            return None
        if isinstance(v, str) and _ASCII_INT.fullmatch(v.strip()):
            v = int(v)
        if isinstance(v, int) and not isinstance(v, bool) and -limit <= v <= limit:
            return v
        self.unfit.append(key)
        return None

    def boolean(self, key: str) -> bool | None:
        v = self.get(key)
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        self.unfit.append(key)
        return None

    def texts(self, key: str) -> list[str] | None:
        v = self.get(key)
        if v is None:
            return None
        if isinstance(v, list) and all(isinstance(t, str) for t in v):
            clean = [storable(t) for t in v]
            if any(c is not t for c, t in zip(clean, v, strict=True)):
                self.unfit.append(key)
            return clean
        self.unfit.append(key)
        return None

    def time(self, key: str) -> datetime | None:
        v = self.get(key)
        if v is None:
            return None
        moment = parse_time(v)
        if moment is None:
            self.unfit.append(key)
        return moment


def _missing_id(partition: str, position: int) -> MalformedResponse:
    return MalformedResponse(
        f"image object without a usable id at position {position} of the page",
        partition=partition or None,
    )


def storable_raw(obj: dict[str, Any], raw: bytes) -> bytes | None:
    """``raw`` made storable as jsonb, or None when it already is (the common case)."""
    if b"\\u0000" not in raw:
        return None
    clean = storable_json(obj)
    return None if clean == obj else orjson.dumps(clean)


def to_record(
    obj: dict[str, Any],
    image_id: str,
    raw: bytes,
    digest: bytes,
    unfit: list[str] | None = None,
    *,
    repaired: bool = False,
) -> ImageRecord:
    """The typed row of one object; the keys whose values did not fit are appended to
    ``unfit`` (``"raw"`` when the object itself had to be made storable, here or — said by
    ``repaired`` — when the answer was decoded)."""
    f = _Fields(obj)
    record = ImageRecord(
        image_id=image_id,
        name=f.text("name"),
        status=f.text("status"),
        visibility=f.text("visibility"),
        owner=f.text("owner"),
        os_type=f.text("__os_type"),
        platform=f.text("__platform"),
        os_version=f.text("__os_version"),
        os_bit=f.text("__os_bit"),
        disk_format=f.text("disk_format"),
        container_format=f.text("container_format"),
        min_ram=f.integer("min_ram", _INT32),
        min_disk=f.integer("min_disk", _INT32),
        size=f.integer("size", _INT64),
        image_size=f.integer("__image_size", _INT64),
        virtual_env_type=f.text("virtual_env_type"),
        protected=f.boolean("protected"),
        tags=f.texts("tags"),
        enterprise_project_id=f.text("enterprise_project_id"),
        created_at=f.time("created_at"),
        updated_at=f.time("updated_at"),
        active_at=f.time("active_at"),
        raw=raw,
        content_hash=digest,
    )
    clean_raw = storable_raw(obj, raw)
    if clean_raw is not None:
        record = record._replace(raw=clean_raw)
    if clean_raw is not None or repaired:
        f.unfit.append("raw")
    if unfit is not None:
        unfit.extend(f.unfit)
    return record


class PageDigest(NamedTuple):
    """What a page costs before we know whether anything changed: ids, hashes, newest update.

    Typed records are built only for the images that need a write (``records``), so an
    unchanged image costs one hash and nothing more.
    """

    objects: list[WireImage]
    ids: list[str]
    hashes: list[bytes]
    newest_update: datetime | None
    oldest_created: datetime | None
    newest_created: datetime | None
    listed_deleted: int  # images listed with status "deleted"

    def records(
        self, positions: list[int], unfit: dict[str, list[str]] | None = None
    ) -> list[ImageRecord]:
        """Typed records of the images at ``positions``; ``unfit`` collects, per image id, the
        keys whose values did not fit their columns."""
        objects, ids, hashes = self.objects, self.ids, self.hashes
        out: list[ImageRecord] = []
        notes: list[str] = []
        for i in positions:
            o = objects[i]
            out.append(to_record(o.obj, ids[i], o.raw, hashes[i], notes, repaired=o.repaired))
            if notes:
                if unfit is not None:
                    unfit[ids[i]] = notes
                notes = []
        return out


def _is_ims_time(v: object) -> TypeGuard[str]:
    """``yyyy-MM-ddThh:mm:ssZ``-shaped: such strings order as the times they name."""
    return isinstance(v, str) and len(v) == 20 and v[19] == "Z"


def time_span(values: Sequence[object]) -> tuple[datetime | None, datetime | None]:
    """Oldest and newest parseable time among ``values`` (None, None when there is none).

    IMS's own format is compared as text and only candidates are parsed: a page costs two
    parses, not one per image.
    """
    texts = sorted(v for v in values if _is_ims_time(v))
    times = [t for v in values if not _is_ims_time(v) and (t := parse_time(v)) is not None]
    # from each end, the first text that parses (almost always the very first)
    for ordered in (texts, reversed(texts)):
        times += itertools.islice(filter(None, map(parse_time, ordered)), 1)
    return (min(times), max(times)) if times else (None, None)


def digest_page(objs: Sequence[WireImage | dict[str, Any]], *, partition: str = "") -> PageDigest:
    """Ids and content hashes of a page; one object without a usable id refuses the page."""
    images = [o if isinstance(o, WireImage) else WireImage.from_object(o) for o in objs]
    ids: list[str] = []
    hashes: list[bytes] = []
    blake2b = hashlib.blake2b
    for i, img in enumerate(images):
        image_id = img.id
        if not usable_id(image_id):
            raise _missing_id(partition, i)
        ids.append(image_id)
        hashes.append(blake2b(img.raw, digest_size=16).digest())
    oldest_created, newest_created = time_span([img.created_at for img in images])
    newest_update = time_span([img.updated_at for img in images])[1]
    listed_deleted = sum(1 for img in images if img.status == "deleted")
    return PageDigest(
        images, ids, hashes, newest_update, oldest_created, newest_created, listed_deleted
    )


def to_records(
    objs: Sequence[WireImage | dict[str, Any]], *, partition: str = ""
) -> list[ImageRecord]:
    """A whole page as typed records; one bad object refuses the page."""
    d = digest_page(objs, partition=partition)
    return d.records(list(range(len(objs))))
