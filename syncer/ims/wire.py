"""The listing answer as it came over the wire, decoded only as far as the sync needs.

An unchanged image must cost almost nothing, and building a Python dict of 63 fields for each
image of each page is most of what a sweep would otherwise spend. So a 200 answer is decoded
with msgspec twice, both in C and both validating the JSON: once into the raw bytes of each
image object (``msgspec.Raw``: exactly what was sent, the input of the content hash and what
``raw jsonb`` stores), once into the four fields the pager and the page digest read (``id``,
``created_at``, ``updated_at``, ``status``). The whole object is decoded (orjson) only for an
image that needs a write.

Anything the fast decoders refuse goes through ``orjson`` and the client's checks instead, so
a malformed answer still gets its precise one-line message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

# What PostgreSQL cannot store in text or jsonb: NUL, and UTF-16 surrogates (not UTF-8 encodable).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def storable(text: str) -> str:
    """``text`` itself, or a copy with every character PostgreSQL cannot store replaced by
    U+FFFD."""
    if "\x00" not in text and (text.isascii() or not _UNSTORABLE.search(text)):
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable_json(value: Any) -> Any:
    """A decoded JSON value with every string (keys included) made storable."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, list):
        return [storable_json(v) for v in value]
    if isinstance(value, dict):
        return {storable(k): storable_json(v) for k, v in value.items()}
    return value


def parse_time(value: Any) -> datetime | None:
    """IMS time text → aware datetime: ``2018-09-06T14:03:27Z``, or with an offset, or
    ``yyyy-MM-dd hh:mm:ss`` (taken as UTC). None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class WireImage(msgspec.Struct, eq=False, gc=False):
    """One image object of an answer: its bytes as sent, four fields, the rest on demand.

    Reads like a read-only mapping (``img["name"]``, ``img.get("status")``); equal to the dict
    it decodes to. msgspec builds it straight from the answer (the four fields); ``raw`` is
    attached afterwards (and ``decoded`` reset, should an answer carry keys of those names).
    """

    id: Any = None
    created_at: Any = None
    updated_at: Any = None
    status: Any = None
    raw: bytes = msgspec.field(default=b"", name="syncer:raw")
    decoded: dict[str, Any] | None = msgspec.field(default=None, name="syncer:decoded")
    # characters PostgreSQL cannot store were replaced while decoding (see ``from_object``)
    repaired: bool = msgspec.field(default=False, name="syncer:repaired")

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> WireImage:
        """An already decoded object (its bytes are its compact JSON, keys in their order).
        Strings that are not UTF-8 encodable (lone surrogates, which only a lenient decoder
        lets through) are made storable first, and the image is marked ``repaired``."""
        try:
            raw = orjson.dumps(obj)
            repaired = False
        except orjson.JSONEncodeError:
            obj = storable_json(obj)
            raw = orjson.dumps(obj)
            repaired = True
        return cls(
            obj.get("id"),
            obj.get("created_at"),
            obj.get("updated_at"),
            obj.get("status"),
            raw,
            obj,
            repaired,
        )

    @property
    def obj(self) -> dict[str, Any]:
        """The whole object (decoded on first use)."""
        if self.decoded is None:
            self.decoded = orjson.loads(self.raw)
        return self.decoded

    def get(self, key: str, default: Any = None) -> Any:
        return self.obj.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.obj[key]

    def __contains__(self, key: object) -> bool:
        return key in self.obj

    def __iter__(self) -> Iterator[str]:
        return iter(self.obj)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, WireImage):
            return self.raw == other.raw or self.obj == other.obj
        if isinstance(other, dict):
            return self.obj == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"WireImage(id={self.id!r}, {len(self.raw)} bytes)"


class _HeadAnswer(msgspec.Struct):
    images: list[WireImage]


class _RawAnswer(msgspec.Struct):
    images: list[msgspec.Raw]
    page_info: Any = None


_decode_heads = msgspec.json.Decoder(_HeadAnswer).decode
_decode_raws = msgspec.json.Decoder(_RawAnswer).decode


def decode_answer(body: bytes) -> tuple[list[WireImage], Any] | None:
    """``(images, page_info)`` of a well-formed answer; None when the fast path refuses it."""
    try:
        raws = _decode_raws(body)
        images = _decode_heads(body).images
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):  # nested too deep
        return None
    for img, raw in zip(images, raws.images, strict=True):
        img.raw = bytes(raw)
        img.decoded = None
        img.repaired = False
    return images, raws.page_info


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_leniently(body: bytes) -> Any:
    """The last resort for an answer orjson refuses: Python's decoder, which lets lone UTF-16
    surrogates (``"\\ud800"``) through (``from_object`` then makes them storable). Raises
    ValueError for anything that is not JSON (NaN and Infinity included)."""
    import json

    return json.loads(body, parse_constant=_no_constants)
