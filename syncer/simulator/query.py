"""``GET /v2/cloudimages`` query parameters → a validated :class:`Query`, or IMS's 400.

Semantics (docs/simulator.md has the table):

* a documented field parameter (and, like Glance, any other unknown parameter) is an exact
  match against the object's value as a string (``true``/``false`` for booleans); an image
  without the field never matches;
* ``protected`` must be ``true``/``false``; ``min_ram``/``min_disk`` integers (exact match);
* ``tag=Key=Value`` matches a tag ``Key.Value`` (or ``Key=Value``); ``tag=X`` a tag ``X``;
* ``member_status`` (accepted | rejected | pending) needs ``visibility=shared``;
* ``enterprise_project_id=all_granted_eps`` matches everything, ``0`` also images without one;
* ``flavor_id`` (``family.size.ratio``, e.g. ``s6.large.2``) keeps images whose ``min_ram`` fits
  the flavor's memory;
* ``created_at``/``updated_at`` take ``OP:TIME`` (gt gte lt lte eq neq; ``yyyy-MM-ddThh:mm:ssZ``
  or ``yyyy-MM-dd hh:mm:ss``, UTC), and may be repeated (all must hold);
* a repeated field parameter must match every value; ``marker``, ``limit``, ``sort_key``,
  ``sort_dir`` take the last value given.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from syncer.simulator.catalog import MISSING, SORT_KEYS, Image, Partition
from syncer.simulator.generate import IMAGE_TYPES

DEFAULT_LIMIT: Final = 500
TIME_OPS: Final[dict[str, Callable[[int, int], bool]]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "eq": operator.eq,
    "neq": operator.ne,
}
MEMBER_STATUSES: Final = ("accepted", "rejected", "pending")
_CONTROL: Final = frozenset(("marker", "limit", "sort_key", "sort_dir"))
_BOOL_FIELDS: Final = frozenset(("protected",))
_INT_FIELDS: Final = frozenset(("min_ram", "min_disk"))
_FLAVOR_VCPUS: Final = {
    "small": 1, "medium": 1, "large": 2, "xlarge": 4, "2xlarge": 8, "3xlarge": 12, "4xlarge": 16,
    "6xlarge": 24, "8xlarge": 32, "12xlarge": 48, "16xlarge": 64,
}  # fmt: skip
_FLAVOR_RE: Final = re.compile(r"^[a-z0-9]+\.([0-9]*x?large|small|medium)\.([0-9]+)$")


class QueryError(Exception):
    """A request IMS answers with 400 ``{"error": {"code": ..., "message": ...}}``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def parse_time(value: str) -> int:
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S"):
        try:
            return int(datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp())
        except ValueError:
            continue
    raise ValueError(value)


def as_param(v: Any) -> str | None:
    """How a field value compares with a query string (None: never matches)."""
    if v is MISSING or v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float | str):
        return str(v)
    return None


Predicate = Callable[[Partition, Image], bool]


@dataclass
class Query:
    image_type: str | None = None
    sort_key: str = "created_at"
    desc: bool = True
    limit: int = DEFAULT_LIMIT
    marker: str | None = None
    image_id: str | None = None
    created: list[tuple[str, int]] = field(default_factory=list)
    updated: list[tuple[str, int]] = field(default_factory=list)
    predicates: list[Predicate] = field(default_factory=list)

    def matches(self, part: Partition, img: Image) -> bool:
        return all(p(part, img) for p in self.predicates)


def _time_filter(name: str, value: str) -> tuple[str, int]:
    op, sep, when = value.partition(":")
    if not sep or op not in TIME_OPS:
        raise QueryError("IMG.0017", f"invalid {name} operator in {value!r}")
    try:
        return op, parse_time(when)
    except ValueError:
        raise QueryError("IMG.0017", f"invalid {name} time in {value!r}") from None


def _eq(key: str, want: str) -> Predicate:
    if key == "id":
        return lambda part, img: img.id == want
    if key == "name":
        return lambda part, img: part.name(img) == want
    if key == "status":
        return lambda part, img: img.status == want
    return lambda part, img: as_param(part.value(img, key)) == want


def _tag(want: str) -> Predicate:
    key, sep, val = want.partition("=")
    accepted = {f"{key}.{val}", f"{key}={val}"} if sep else {want}

    def test(part: Partition, img: Image) -> bool:
        tags = part.value(img, "tags")
        return isinstance(tags, list) and any(t in accepted for t in tags)

    return test


def _flavor(flavor_id: str) -> Predicate:
    m = _FLAVOR_RE.match(flavor_id)
    if m is None:
        return lambda part, img: False
    ram_mb = _FLAVOR_VCPUS.get(m.group(1), 1) * int(m.group(2)) * 1024

    def test(part: Partition, img: Image) -> bool:
        need = part.value(img, "min_ram")
        return isinstance(need, int) and need <= ram_mb

    return test


def _eid(want: str) -> Predicate | None:
    if want == "all_granted_eps":
        return None
    if want == "0":
        return lambda part, img: as_param(part.value(img, "enterprise_project_id")) in (None, "0")
    return _eq("enterprise_project_id", want)


def _member(want: str) -> Predicate:
    return lambda part, img: part.member_status(img) == want


def _time(name: str, op: str, t: int) -> Predicate:
    compare = TIME_OPS[op]
    if name == "created_at":
        return lambda part, img: compare(img.created, t)
    return lambda part, img: compare(img.updated, t)


def parse_query(pairs: Sequence[tuple[str, str]]) -> Query:
    q = Query()
    control = {k: v for k, v in pairs if k in _CONTROL}  # the last value wins
    sort_key = control.get("sort_key", "created_at")
    if sort_key not in SORT_KEYS:
        raise QueryError("IMG.0017", f"invalid sort_key {sort_key!r}")
    q.sort_key = sort_key
    sort_dir = control.get("sort_dir", "desc")
    if sort_dir not in ("asc", "desc"):
        raise QueryError("IMG.0017", f"invalid sort_dir {sort_dir!r}")
    q.desc = sort_dir == "desc"
    if "limit" in control:
        raw = control["limit"]
        if not re.fullmatch(r"[0-9]+", raw):
            raise QueryError("IMG.0017", f"invalid limit {raw!r}: a non-negative integer")
        q.limit = int(raw)
    q.marker = control.get("marker") or None

    params = [(k, v) for k, v in pairs if k not in _CONTROL]
    shared_visibility = ("visibility", "shared") in params
    for key, value in params:
        if key == "__imagetype":
            if value not in IMAGE_TYPES:
                raise QueryError("IMG.0024", "The imagetype is invalid.")
            if q.image_type is not None and q.image_type != value:
                q.predicates.append(lambda part, img: False)
            q.image_type = value
        elif key in ("created_at", "updated_at"):
            op, t = _time_filter(key, value)
            (q.created if key == "created_at" else q.updated).append((op, t))
            q.predicates.append(_time(key, op, t))
        elif key in _BOOL_FIELDS:
            if value.lower() not in ("true", "false"):
                raise QueryError("IMG.0017", f"invalid {key} {value!r}: true or false")
            q.predicates.append(_eq(key, value.lower()))
        elif key in _INT_FIELDS:
            if not re.fullmatch(r"-?[0-9]+", value):
                raise QueryError("IMG.0017", f"invalid {key} {value!r}: an integer")
            q.predicates.append(_eq(key, str(int(value))))
        elif key == "member_status":
            if value not in MEMBER_STATUSES:
                raise QueryError("IMG.0017", f"invalid member_status {value!r}")
            if not shared_visibility:
                raise QueryError("IMG.0017", "member_status needs visibility=shared")
            q.predicates.append(_member(value))
        elif key == "tag":
            q.predicates.append(_tag(value))
        elif key == "flavor_id":
            q.predicates.append(_flavor(value))
        elif key == "enterprise_project_id":
            if (p := _eid(value)) is not None:
                q.predicates.append(p)
        else:
            if key == "id":
                q.image_id = value
            q.predicates.append(_eq(key, value))
    return q
