"""The listing answer decoded as far as the sync needs: raw bytes per image plus four fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncer.errors import MalformedResponse
from syncer.ims.wire import WireImage, decode_answer
from syncer.records import digest_page, time_span

BODY = (
    b'{ "images" : [ {"name": "a \\u00e9", "id": "i-1", "created_at": "2024-01-01T00:00:00Z",'
    b' "updated_at": "2024-01-02T00:00:00Z", "status": "active", "tags": [1, {"k": null}]},\n'
    b'{"id":"i-2","created_at":"2024-01-01T00:00:01Z","status":"deleted"} ],'
    b' "page_info": {"next_marker": "i-2"}, "extra": 1 }'
)


def test_each_image_keeps_its_bytes_exactly_as_sent() -> None:
    decoded = decode_answer(BODY)
    assert decoded is not None
    images, page_info = decoded
    assert page_info == {"next_marker": "i-2"}
    assert images[0].raw == (
        b'{"name": "a \\u00e9", "id": "i-1", "created_at": "2024-01-01T00:00:00Z",'
        b' "updated_at": "2024-01-02T00:00:00Z", "status": "active", "tags": [1, {"k": null}]}'
    )
    assert [(i.id, i.created_at, i.updated_at, i.status) for i in images] == [
        ("i-1", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "active"),
        ("i-2", "2024-01-01T00:00:01Z", None, "deleted"),
    ]
    assert images[0] == orjson.loads(BODY)["images"][0]
    assert images[0]["name"] == "a é" and images[0].get("missing", 7) == 7
    assert "tags" in images[0] and list(images[1]) == ["id", "created_at", "status"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"images": [{"id": "a"}',  # truncated
        b'{"images": {"id": "a"}}',  # not a list
        b'{"images": [{"id": "a"}, 3]}',  # an item that is not an object
        b'{"page_info": {}}',  # no images
        b"[]",
        b'{"images": []} trailing',
    ],
)
def test_anything_unusual_is_left_to_the_general_decoder(body: bytes) -> None:
    assert decode_answer(body) is None


def test_keys_named_like_internal_fields_cannot_poison_the_object() -> None:
    body = b'{"images": [{"id": "a", "syncer:decoded": {"id": "forged"}, "syncer:raw": "eA=="}]}'
    decoded = decode_answer(body)
    assert decoded is not None
    (image,) = decoded[0]
    assert image.raw == body[12:-2]
    assert image.obj == {"id": "a", "syncer:decoded": {"id": "forged"}, "syncer:raw": "eA=="}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.lists(
        st.dictionaries(st.text(max_size=6), json_values, max_size=6).map(
            lambda d: {"id": "x", **d}
        ),
        max_size=5,
    )
)
def test_objects_round_trip(objs: list[dict[str, Any]]) -> None:
    decoded = decode_answer(orjson.dumps({"images": objs}))
    assert decoded is not None
    assert [w.obj for w in decoded[0]] == objs
    assert [orjson.loads(w.raw) for w in decoded[0]] == objs


def test_content_hash_is_of_the_bytes() -> None:
    a = WireImage.from_object({"id": "a", "name": "x"})
    same = decode_answer(b'{"images":[{"id":"a","name":"x"}]}')
    other = decode_answer(b'{"images":[{"id":"a","name":"y"}]}')
    assert same is not None and other is not None
    h = digest_page([a, same[0][0], other[0][0]]).hashes
    assert h[0] == h[1] != h[2]


def test_digest_refuses_an_image_without_a_usable_id() -> None:
    with pytest.raises(MalformedResponse, match="position 1"):
        digest_page([{"id": "a"}, {"id": "  "}], partition="r/private")


def test_time_span_parses_only_what_it_must_and_skips_garbage() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    values = [
        "2024-01-01T00:00:05Z",
        "2024-13-01T00:00:00Z",  # IMS-shaped but no such month: ignored
        "2023-12-31 23:59:59",  # the other documented format (UTC)
        None,
        "garbage",
        "2024-01-01T00:00:03Z",
    ]
    assert time_span(values) == (
        datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC),
        t.replace(second=5),
    )
    assert time_span([None, "x"]) == (None, None)
