"""An IMS image object → the typed row syncer stores, plus the raw object and a content hash.

Typed columns are parsed leniently: a missing or ill-typed optional field becomes NULL. Only an
object without a usable ``id`` is refused (the partition fails; nothing of the page commits).
The content hash covers the object's bytes exactly as the API sent them (``WireImage.raw``), so
any change — including to fields this code does not know — is seen, and an unchanged image costs
one hash. Should the API ever reorder keys or whitespace of an unchanged object, the hash differs
and the row is rewritten once, but no event is made: events compare the objects as ``jsonb``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeGuard

from syncer.errors import MalformedResponse
from syncer.ims.wire import WireImage, parse_time

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


def _tags(v: Any) -> list[str] | None:
    if isinstance(v, list) and all(isinstance(t, str) for t in v):
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

    objects: list[WireImage]
    ids: list[str]
    hashes: list[bytes]
    newest_update: datetime | None
    oldest_created: datetime | None
    newest_created: datetime | None
    listed_deleted: int  # images listed with status "deleted"

    def records(self, positions: list[int]) -> list[ImageRecord]:
        objects, ids, hashes = self.objects, self.ids, self.hashes
        return [to_record(objects[i].obj, ids[i], objects[i].raw, hashes[i]) for i in positions]


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
        if not (isinstance(image_id, str) and image_id.strip() and len(image_id) <= 255):
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
