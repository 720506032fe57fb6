"""An IMS image object → the typed row syncer stores, plus the raw object and a content hash.

Typed columns are parsed leniently: a missing or ill-typed optional field becomes NULL. Only an
object without a usable ``id`` is refused (the partition fails; nothing of the page commits).
The content hash covers the whole object with its keys sorted, so any change — including to
fields this code does not know — is seen, and a mere reordering of keys is not.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from syncer.errors import MalformedResponse

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


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: Any, limit: int) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        v = v.strip()
        if not v.isdigit():
            return None
        v = int(v)
    return v if isinstance(v, int) and -limit <= v <= limit else None


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


def parse_time(v: Any) -> datetime | None:
    """``2018-09-06T14:03:27Z`` (or with an offset, or ``yyyy-MM-dd hh:mm:ss`` as UTC)."""
    if not isinstance(v, str) or not v:
        return None
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def _tags(v: Any) -> list[str] | None:
    if isinstance(v, list) and all(isinstance(t, str) for t in v):
        return v
    return None


def canonical_json(obj: dict[str, Any]) -> bytes:
    """The object as JSON with sorted keys: what is hashed, and what ``raw`` stores.

    jsonb keeps neither key order nor whitespace, so storing this loses nothing of the object
    as the API sent it, and saves encoding it twice.
    """
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def content_hash(obj: dict[str, Any]) -> bytes:
    return _hash(canonical_json(obj))


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def image_id_of(obj: Any) -> str | None:
    if isinstance(obj, dict):
        v = obj.get("id")
        if isinstance(v, str) and v.strip() and len(v) <= 255:
            return v
    return None


def _missing_id(partition: str, position: int) -> MalformedResponse:
    return MalformedResponse(
        f"image object without a usable id at position {position} of the page",
        partition=partition or None,
    )


def to_record(obj: dict[str, Any], image_id: str, raw: bytes, digest: bytes) -> ImageRecord:
    g = obj.get
    return ImageRecord(
        image_id=image_id,
        name=_str(g("name")),
        status=_str(g("status")),
        visibility=_str(g("visibility")),
        owner=_str(g("owner")),
        os_type=_str(g("__os_type")),
        platform=_str(g("__platform")),
        os_version=_str(g("__os_version")),
        os_bit=_str(g("__os_bit")),
        disk_format=_str(g("disk_format")),
        container_format=_str(g("container_format")),
        min_ram=_int(g("min_ram"), _INT32),
        min_disk=_int(g("min_disk"), _INT32),
        size=_int(g("size"), _INT64),
        image_size=_int(g("__image_size"), _INT64),
        virtual_env_type=_str(g("virtual_env_type")),
        protected=_bool(g("protected")),
        tags=_tags(g("tags")),
        enterprise_project_id=_str(g("enterprise_project_id")),
        created_at=parse_time(g("created_at")),
        updated_at=parse_time(g("updated_at")),
        active_at=parse_time(g("active_at")),
        raw=raw,
        content_hash=digest,
    )


class PageDigest(NamedTuple):
    """What a page costs before we know whether anything changed: ids, hashes, newest update.

    Typed records are built only for the images that need a write (``records``), so an
    unchanged image costs one hash and nothing more.
    """

    objects: list[dict[str, Any]]
    ids: list[str]
    raws: list[bytes]
    hashes: list[bytes]
    newest_update: datetime | None

    def records(self, positions: list[int]) -> list[ImageRecord]:
        return [
            to_record(self.objects[i], self.ids[i], self.raws[i], self.hashes[i]) for i in positions
        ]


def digest_page(objs: list[Any], *, partition: str = "") -> PageDigest:
    """Ids and content hashes of a page; one object without a usable id refuses the page."""
    ids: list[str] = []
    raws: list[bytes] = []
    hashes: list[bytes] = []
    newest_update: datetime | None = None
    for i, obj in enumerate(objs):
        image_id = image_id_of(obj)
        if image_id is None:
            raise _missing_id(partition, i)
        ids.append(image_id)
        raw = canonical_json(obj)
        raws.append(raw)
        hashes.append(_hash(raw))
        updated = parse_time(obj.get("updated_at"))
        if updated is not None and (newest_update is None or updated > newest_update):
            newest_update = updated
    return PageDigest(objs, ids, raws, hashes, newest_update)


def to_records(objs: list[Any], *, partition: str = "") -> list[ImageRecord]:
    """A whole page as typed records; one bad object refuses the page."""
    d = digest_page(objs, partition=partition)
    return d.records(list(range(len(objs))))
