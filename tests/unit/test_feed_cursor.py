"""Feed cursors: opaque strings that round-trip, refuse anything we did not make (400), and are
checked against the database's facts (410 when the database cannot continue from them)."""

from __future__ import annotations

import base64
import struct
import uuid

import pytest

from syncer.feed.cursor import (
    NO_TAG,
    MalformedCursor,
    Position,
    decode,
    encode,
    epoch_bytes,
    tag_of,
)
from syncer.feed.hub import CursorGone, check_facts
from syncer.store.events import PositionFacts

EPOCH = uuid.uuid4()
E = epoch_bytes(EPOCH)
EVENT = uuid.uuid4()


def test_round_trip_and_shape() -> None:
    text = encode(E, 12345, tag_of(EVENT))
    assert len(text) == 32 and text.isascii()
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode(text) == Position(12345, tag_of(EVENT), E)
    assert decode(Position(0, NO_TAG, E).encode()).seq == 0


def _raw(version: int = 1, seq: int = 5, tag: bytes = b"12345678") -> str:
    return base64.urlsafe_b64encode(struct.pack(">B7sQ8s", version, E, seq, tag)).decode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "now",
        "x" * 31,
        "x" * 33,
        "x" * 10_000,
        _raw()[:-1] + "=",  # padding inside
        _raw()[:-1] + "!",  # not base64url
        _raw().replace("A", "+"),  # standard, not URL-safe, alphabet
        "é" * 32,  # unicode
        "１" * 32,  # full-width digits
        _raw(version=2),
        _raw(seq=2**63),  # beyond bigint
        _raw(seq=2**64 - 1),
        _raw(seq=0, tag=b"12345678"),  # seq 0 has no event to name
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(MalformedCursor):
        decode(text)


def facts(
    seq: int, event_id: uuid.UUID | None, pruned: int = 0, pruned_id: uuid.UUID | None = None
) -> PositionFacts:
    return PositionFacts(seq, EPOCH, pruned, pruned_id, event_id)


def test_check_facts() -> None:
    check_facts(Position(7, tag_of(EVENT), E), facts(7, EVENT))
    check_facts(Position(0, NO_TAG, E), facts(0, None))
    boundary = uuid.uuid4()
    # exactly at the retention boundary: nothing after it was removed, the cursor is good
    check_facts(Position(9, tag_of(boundary), E), facts(9, None, 9, boundary))
    with pytest.raises(CursorGone, match="retention") as info:
        check_facts(Position(8, tag_of(EVENT), E), facts(8, None, 9, boundary))
    assert info.value.pruned_through == 9
    with pytest.raises(CursorGone, match="retention"):
        check_facts(Position(0, NO_TAG, E), facts(0, None, 9, boundary))
    with pytest.raises(CursorGone, match="another database"):
        check_facts(Position(7, tag_of(EVENT), epoch_bytes(uuid.uuid4())), facts(7, EVENT))
    # restored: the seq now holds another event, or none at all
    with pytest.raises(CursorGone, match="does not have"):
        check_facts(Position(7, tag_of(EVENT), E), facts(7, uuid.uuid4()))
    with pytest.raises(CursorGone, match="does not have"):
        check_facts(Position(7, tag_of(EVENT), E), facts(7, None))
