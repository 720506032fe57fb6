"""The change feed over HTTP (CONTRACT §5): long-poll, Server-Sent Events, list-then-follow,
consumer offsets, retention. The only package with feed HTTP handlers; its database access is
in syncer.store (events, listener)."""

from syncer.feed.hub import Tuning
from syncer.feed.service import Feed, check_listen

__all__ = ["Feed", "Tuning", "check_listen"]
