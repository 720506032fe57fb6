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
from datetime import UTC, datetime
from typing import Annotated, Any, NamedTuple, TypeGuard

import msgspec
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
        if isinstance(v, str):
            n = _ascii_int(v, limit)
            if n is None:
                self.unfit.append(key)
            return n
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


def _ascii_int(v: str, limit: int) -> int | None:
    """A string of ASCII digits (sign and surrounding blanks allowed) within ±limit, or None."""
    if _ASCII_INT.fullmatch(v.strip()):
        n = int(v)
        if -limit <= n <= limit:
            return n
    return None


_Int32 = Annotated[int, msgspec.Meta(ge=-_INT32, le=_INT32)]
_Int64 = Annotated[int, msgspec.Meta(ge=-_INT64, le=_INT64)]


class _Typed(msgspec.Struct, gc=False):
    """The typed columns of an object whose every value fits, decoded in C (``_fast_record``).
    Any value of another JSON type, or out of its column's range, makes the decode fail, and
    the object goes the lenient way (``to_record``), which says what did not fit."""

    name: str | None = None
    status: str | None = None
    visibility: str | None = None
    owner: str | None = None
    os_type: str | None = msgspec.field(default=None, name="__os_type")
    platform: str | None = msgspec.field(default=None, name="__platform")
    os_version: str | None = msgspec.field(default=None, name="__os_version")
    os_bit: str | None = msgspec.field(default=None, name="__os_bit")
    disk_format: str | None = None
    container_format: str | None = None
    min_ram: str | _Int32 | None = None
    min_disk: str | _Int32 | None = None
    size: str | _Int64 | None = None
    image_size: str | _Int64 | None = msgspec.field(default=None, name="__image_size")
    virtual_env_type: str | None = None
    protected: bool | None = None
    tags: list[str] | None = None
    enterprise_project_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    active_at: str | None = None


_decode_typed = msgspec.json.Decoder(_Typed).decode


def _fast_record(image_id: str, raw: bytes, digest: bytes) -> ImageRecord | None:
    """``to_record`` of an object every value of which fits its column (the common case),
    without building its dict: one decode in C. None when anything might not fit — a NUL
    (``\\u0000``, the one unstorable character a valid answer can carry), a value of another
    type or range, an unparseable time — and the object must go the lenient way."""
    if b"\\" in raw and b"\\u0000" in raw:  # (a one-byte search first: far quicker)
        return None
    try:
        t = _decode_typed(raw)
        min_ram, min_disk, size, image_size = t.min_ram, t.min_disk, t.size, t.image_size
        if isinstance(min_ram, str):
            min_ram = _number(min_ram, _INT32)
        if isinstance(min_disk, str):
            min_disk = _number(min_disk, _INT32)
        if isinstance(size, str):
            size = _number(size, _INT64)
        if isinstance(image_size, str):
            image_size = _number(image_size, _INT64)
        created_at = None if t.created_at is None else _moment(t.created_at)
        updated_at = (
            None
            if t.updated_at is None
            else created_at
            if t.updated_at == t.created_at
            else _moment(t.updated_at)
        )
        active_at = None if t.active_at is None else _moment(t.active_at)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None
    return _new_record(
        ImageRecord,
        (
            image_id,
            t.name,
            t.status,
            t.visibility,
            t.owner,
            t.os_type,
            t.platform,
            t.os_version,
            t.os_bit,
            t.disk_format,
            t.container_format,
            min_ram,
            min_disk,
            size,
            image_size,
            t.virtual_env_type,
            t.protected,
            t.tags,
            t.enterprise_project_id,
            created_at,
            updated_at,
            active_at,
            raw,
            digest,
        ),
    )


def _number(text: str, limit: int) -> int:
    n = _ascii_int(text, limit)
    if n is None:
        raise ValueError(text)
    return n


def _moment(text: str) -> datetime:
    try:
        moment = _fromisoformat(text)
    except ValueError:
        lenient = parse_time(text)  # (leading or trailing blanks)
        if lenient is None:
            raise
        return lenient
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_fromisoformat = datetime.fromisoformat
_new_record = tuple.__new__  # ImageRecord's fields, in order, without its keyword handling


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
    """What a page costs before we know whether anything changed: ids, hashes, its span of
    creation times (a full sweep's prefilter reads the partition's rows within it).

    Typed records are built only for the images that need a write (``records``), so an
    unchanged image costs one hash and nothing more.
    """

    objects: list[WireImage]
    ids: list[str]
    hashes: list[bytes]
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
            if not o.repaired and (fast := _fast_record(ids[i], o.raw, hashes[i])) is not None:
                out.append(fast)
                continue
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
    texts: list[str] = []
    times: list[datetime] = []
    for v in values:
        if _is_ims_time(v):
            texts.append(v)
        elif v is not None and (t := parse_time(v)) is not None:
            times.append(t)
    if texts:
        oldest, newest = parse_time(min(texts)), parse_time(max(texts))
        if oldest is None or newest is None:  # IMS-shaped but no such time: go the long way
            texts.sort()
            # from each end, the first text that parses (almost always the very first)
            for ordered in (texts, reversed(texts)):
                times += itertools.islice(filter(None, map(parse_time, ordered)), 1)
        else:
            times += (oldest, newest)
    return (min(times), max(times)) if times else (None, None)


def digest_page(objs: Sequence[WireImage | dict[str, Any]], *, partition: str = "") -> PageDigest:
    """Ids and content hashes of a page; one object without a usable id refuses the page."""
    images = [o if isinstance(o, WireImage) else WireImage.from_object(o) for o in objs]
    ids: list[str] = []
    hashes: list[bytes] = []
    blake2b = hashlib.blake2b
    listed_deleted = 0
    for i, img in enumerate(images):
        image_id = img.id
        if not usable_id(image_id):
            raise _missing_id(partition, i)
        ids.append(image_id)
        hashes.append(blake2b(img.raw, digest_size=16).digest())
        if img.status == "deleted":
            listed_deleted += 1
    oldest_created, newest_created = time_span([img.created_at for img in images])
    return PageDigest(images, ids, hashes, oldest_created, newest_created, listed_deleted)


def to_records(
    objs: Sequence[WireImage | dict[str, Any]], *, partition: str = ""
) -> list[ImageRecord]:
    """A whole page as typed records; one bad object refuses the page."""
    d = digest_page(objs, partition=partition)
    return d.records(list(range(len(objs))))
