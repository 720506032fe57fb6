"""Feed cursors: opaque to consumers, checkable by us.

A cursor names a position in the feed: "every event up to seq N has been seen". It carries
- the database's epoch (``ims.feed_meta.epoch``, made by the migration): a cursor from another
  database — one recreated and migrated anew — is refused;
- N;
- 8 bytes of the event_id of the event at N: a restored database (pg_dump, point-in-time
  recovery) keeps its epoch but rewinds the sequence, so seq numbers are reused by other events;
  the event at N no longer has the remembered id, and the cursor is refused instead of silently
  skipping or repeating events.

Encoded as 32 characters of URL-safe base64 (24 bytes: version, 7 bytes of epoch, seq, tag).
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from uuid import UUID

VERSION = 1
_LAYOUT = struct.Struct(">B7sQ8s")
LENGTH = 32  # characters
NO_TAG = bytes(8)  # seq 0: the position before every event
MAX_SEQ = 2**63 - 1


class MalformedCursor(ValueError):
    """Not a cursor this server ever made (a 400, not a 410)."""


def tag_of(event_id: UUID | None) -> bytes:
    return NO_TAG if event_id is None else event_id.bytes[:8]


@dataclass(frozen=True, slots=True)
class Position:
    """A checked or to-be-checked place in the feed: after the event ``seq`` whose id starts
    with ``tag`` (seq 0, NO_TAG: before the first event)."""

    seq: int
    tag: bytes
    epoch: bytes  # 7 bytes

    def encode(self) -> str:
        return encode(self.epoch, self.seq, self.tag)


def epoch_bytes(epoch: UUID) -> bytes:
    return epoch.bytes[:7]


def encode(epoch: bytes, seq: int, tag: bytes) -> str:
    return base64.urlsafe_b64encode(_LAYOUT.pack(VERSION, epoch, seq, tag)).decode("ascii")


def decode(text: str) -> Position:
    """Parse a cursor; raises MalformedCursor for anything we could not have issued."""
    if len(text) != LENGTH or not text.isascii():
        raise MalformedCursor("not a feed cursor")
    try:
        raw = base64.urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, ValueError):
        raise MalformedCursor("not a feed cursor") from None
    # urlsafe_b64decode ignores stray characters; the round trip must be exact.
    if len(raw) != _LAYOUT.size or base64.urlsafe_b64encode(raw).decode("ascii") != text:
        raise MalformedCursor("not a feed cursor")
    version, epoch, seq, tag = _LAYOUT.unpack(raw)
    if version != VERSION:
        raise MalformedCursor(f"feed cursor of unknown version {version}")
    if seq > MAX_SEQ or (seq == 0 and tag != NO_TAG):
        raise MalformedCursor("not a feed cursor")
    return Position(seq, tag, epoch)
