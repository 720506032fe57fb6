"""Typed rows: the fast decode (in C, for objects whose every value fits) gives exactly what the
lenient path gives, and leaves every object with a value that does not fit to it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from syncer.records import _fast_record, to_record
from syncer.simulator import Catalog

KEYS = [
    "name", "status", "visibility", "owner", "__os_type", "__platform", "__os_version",
    "__os_bit", "disk_format", "container_format", "min_ram", "min_disk", "size",
    "__image_size", "virtual_env_type", "protected", "tags", "enterprise_project_id",
    "created_at", "updated_at", "active_at",
]  # fmt: skip

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.sampled_from([0, 2**31 - 1, -(2**31 - 1), -(2**31), 2**31, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["12", " 12 ", "+7", "-0", "1_000", "²", "١٢", "1e3", "9223372036854775808"]),
    st.sampled_from(["true", "False", "2024-01-02T03:04:05Z", "2024-01-02 03:04:05", "x\x00y"]),
    st.sampled_from(
        ["2024-01-02T03:04:05+08:00", "2024-01-02T03:04:05.5Z", "2024-13-01T00:00:00Z"]
    ),
    st.lists(st.one_of(st.text(max_size=4), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), values))
def test_the_fast_record_is_the_lenient_one_or_leaves_the_object_to_it(obj: dict[str, Any]) -> None:
    raw = json.dumps({"id": "i-1", **obj}, ensure_ascii=False).encode()
    digest = hashlib.blake2b(raw, digest_size=16).digest()
    unfit: list[str] = []
    lenient = to_record(orjson.loads(raw), "i-1", raw, digest, unfit)
    fast = _fast_record("i-1", raw, digest)
    if fast is not None:
        assert fast == lenient and unfit == []
    else:  # something did not fit (or may not: the text \\u0000 is where a NUL would be)
        assert unfit or b"\\u0000" in raw


def test_every_simulated_object_takes_the_fast_way() -> None:
    catalog = Catalog(regions=["r"], images_per_partition=50, seed=3)
    for image_type in catalog.image_types:
        for obj in catalog.images("r", image_type):
            raw = orjson.dumps(obj)
            fast = _fast_record(obj["id"], raw, b"h")
            assert fast is not None and fast == to_record(obj, obj["id"], raw, b"h")
