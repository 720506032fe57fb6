"""Request parameters of the /v1/ routes, checked strictly: anything unexpected is a 400 with
one line saying what, never a 500. Unknown and repeated parameters are refused too (a typo in a
filter name must not silently return everything)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import orjson
from multidict import MultiMapping

from syncer.config import IMAGE_TYPES
from syncer.feed.cursor import MalformedCursor, Position, decode
from syncer.store.events import EventFilter

KINDS = ("created", "status_changed", "updated", "deleted", "restored")
MAX_LIMIT, DEFAULT_LIMIT, MAX_WAIT = 1000, 100, 60.0
MAX_LIST = 50  # values in one comma-separated filter

_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_IMAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_STATUS = re.compile(r"[a-z][a-z_]{0,31}")
_CONSUMER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_LIMIT = re.compile(r"[0-9]{1,4}")
_WAIT = re.compile(r"[0-9]{1,2}(?:\.[0-9]{1,3})?")

EVENTS_PARAMS = frozenset({"since", "limit", "wait", "region", "image_type", "kind", "image_id"})
STREAM_PARAMS = frozenset({"since", "region", "image_type", "kind", "image_id"})
IMAGES_PARAMS = frozenset({"region", "image_type", "status", "image_id", "limit", "after"})


class BadRequest(ValueError):
    """A 400: the message is one line, safe to show (values are quoted and shortened)."""


def show(value: str, width: int = 40) -> str:
    """A value quoted for an error line: escaped, never longer than ``width``."""
    text = repr(value[:width])
    return text if len(value) <= width else text[:-1] + "…" + text[-1]


Since = Position | Literal["oldest", "now"]


@dataclass(frozen=True)
class EventsQuery:
    since: Since | None  # None: not given
    limit: int
    wait: float
    filter: EventFilter


@dataclass(frozen=True)
class ImagesQuery:
    regions: tuple[str, ...] | None
    image_types: tuple[str, ...] | None
    statuses: tuple[str, ...] | None
    image_ids: tuple[str, ...] | None
    limit: int
    after: tuple[str, str] | None


def single_values(query: MultiMapping[str], allowed: frozenset[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in query.items():
        if key not in allowed:
            raise BadRequest(
                f"unknown parameter {show(key)} (expected one of {', '.join(sorted(allowed))})"
            )
        if key in values:
            raise BadRequest(f"parameter {key} is given more than once")
        values[key] = value
    return values


def parse_since(value: str, what: str = "since") -> Since:
    if value == "0":
        return "oldest"
    if value == "now":
        return "now"
    try:
        return decode(value)
    except MalformedCursor as e:
        raise BadRequest(
            f'{what} must be a cursor, "0" or "now", got {show(value)} ({e})'
        ) from None


def parse_limit(values: Mapping[str, str]) -> int:
    raw = values.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIMIT}, got {show(raw)}")
    return int(raw)


def parse_wait(values: Mapping[str, str]) -> float:
    raw = values.get("wait")
    if raw is None:
        return 0.0
    if not _WAIT.fullmatch(raw) or float(raw) > MAX_WAIT:
        raise BadRequest(f"wait must be a number of seconds from 0 to 60, got {show(raw)}")
    return float(raw)


def _list(
    values: Mapping[str, str], key: str, check: re.Pattern[str] | tuple[str, ...]
) -> tuple[str, ...] | None:
    raw = values.get(key)
    if raw is None:
        return None
    items = raw.split(",")
    if len(items) > MAX_LIST:
        raise BadRequest(f"{key} lists more than {MAX_LIST} values")
    for item in items:
        ok = item in check if isinstance(check, tuple) else check.fullmatch(item) is not None
        if not ok:
            hint = f" (one of {', '.join(check)})" if isinstance(check, tuple) else ""
            raise BadRequest(f"{key} has an invalid value {show(item)}{hint}")
    return tuple(dict.fromkeys(items))


def parse_filter(values: Mapping[str, str]) -> EventFilter:
    image_id = values.get("image_id")
    if image_id is not None and not _IMAGE_ID.fullmatch(image_id):
        raise BadRequest(f"image_id has an invalid value {show(image_id)}")
    return EventFilter(
        regions=_list(values, "region", _REGION),
        image_types=_list(values, "image_type", IMAGE_TYPES),
        kinds=_list(values, "kind", KINDS),
        image_id=image_id,
    )


def events_query(query: MultiMapping[str], *, stream: bool = False) -> EventsQuery:
    values = single_values(query, STREAM_PARAMS if stream else EVENTS_PARAMS)
    since = values.get("since")
    return EventsQuery(
        since=None if since is None else parse_since(since),
        limit=parse_limit(values),
        wait=parse_wait(values),
        filter=parse_filter(values),
    )


def encode_after(region: str, image_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([region, image_id])).decode().rstrip("=")


def _decode_after(raw: str) -> tuple[str, str]:
    bad = BadRequest(f"after must be the next_after of a previous page, got {show(raw)}")
    if len(raw) > 400 or not raw.isascii():
        raise bad
    try:
        key = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad from None
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise bad
    return key[0], key[1]


def images_query(query: MultiMapping[str]) -> ImagesQuery:
    values = single_values(query, IMAGES_PARAMS)
    after = values.get("after")
    return ImagesQuery(
        regions=_list(values, "region", _REGION),
        image_types=_list(values, "image_type", IMAGE_TYPES),
        statuses=_list(values, "status", _STATUS),
        image_ids=_list(values, "image_id", _IMAGE_ID),
        limit=parse_limit(values),
        after=None if after is None else _decode_after(after),
    )


def consumer_name(name: str) -> str:
    if not _CONSUMER.fullmatch(name):
        raise BadRequest(
            f"consumer name {show(name)} is not valid "
            "(1-128 characters: letters, digits, '.', '_', '-'; starting with a letter or digit)"
        )
    return name


def consumer_body(body: bytes) -> Since:
    """``{"cursor": "..."}`` — a cursor, or "0"/"now" for the oldest retained event/the head."""
    if len(body) > 4096:
        raise BadRequest('body too large (expected {"cursor": "..."})')
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest('body must be JSON: {"cursor": "..."}') from None
    if not isinstance(doc, dict) or set(doc) != {"cursor"} or not isinstance(doc["cursor"], str):
        raise BadRequest('body must be exactly {"cursor": "..."}')
    return parse_since(doc["cursor"], "cursor")
