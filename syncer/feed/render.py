"""Events and images as the feed sends them: rendered once, sent to every client as bytes.

An event's JSON is the columns of ``ims.image_events`` under their own names, plus ``cursor``
(CONTRACT §5): ``seq`` and ``sync_run_id`` integers, ``occurred_at`` ISO 8601 with its zone,
``changes`` an object. Its Server-Sent Events frame is ``id:`` (the cursor), ``event:`` (the
kind) and ``data:`` (the JSON, which never contains a line break).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from syncer.feed.cursor import Position, encode, tag_of
from syncer.store.events import EventRow


class Rendered:
    """One event, ready to send: its frame holds its JSON at [json_start:json_end]."""

    __slots__ = (
        "cursor",
        "frame",
        "image_id",
        "image_type",
        "json_end",
        "json_start",
        "kind",
        "region",
        "seq",
        "tag",
    )

    def __init__(self, row: EventRow, epoch: bytes) -> None:
        self.seq = row.seq
        self.tag = tag_of(row.event_id)
        self.region, self.image_id, self.kind = row.region, row.image_id, row.kind
        self.image_type = row.image_type
        self.cursor = encode(epoch, row.seq, self.tag)
        body = orjson.dumps(
            {
                "seq": row.seq,
                "event_id": str(row.event_id),
                "occurred_at": row.occurred_at,
                "region": row.region,
                "image_id": row.image_id,
                "kind": row.kind,
                "old_status": row.old_status,
                "new_status": row.new_status,
                "changes": orjson.Fragment(row.changes),
                "sync_run_id": row.sync_run_id,
                "cursor": self.cursor,
            }
        )
        head = f"id: {self.cursor}\nevent: {row.kind}\ndata: ".encode()
        self.json_start, self.json_end = len(head), len(head) + len(body)
        self.frame = head + body + b"\n\n"

    @property
    def json(self) -> memoryview:
        return memoryview(self.frame)[self.json_start : self.json_end]

    def position(self, epoch: bytes) -> Position:
        return Position(self.seq, self.tag, epoch)


def events_body(events: Iterable[Rendered], next_cursor: str) -> bytes:
    """The long-poll answer: ``{"events": [...], "next_cursor": "..."}``."""
    return b"".join(
        (
            b'{"events":[',
            b",".join(e.json for e in events),
            b'],"next_cursor":"',
            next_cursor.encode(),
            b'"}',
        )
    )


def image_json(row: Mapping[str, Any]) -> orjson.Fragment:
    """One row of ims.current_images as a JSON object (``raw`` as the API sent it)."""
    doc = dict(row)
    doc["raw"] = orjson.Fragment(row["raw"])
    return orjson.Fragment(orjson.dumps(doc))
