"""The feed's Prometheus metrics, in prometheus_client's default registry (served by the
daemon's /metrics). Names start with ``syncer_feed_``; docs/metrics.md lists them with the rest
(a test keeps it equal to the registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, disable_created_metrics

# As in syncer.metrics: no ``*_created`` series, whichever module is imported first.
disable_created_metrics()  # type: ignore[no-untyped-call]

HEAD_SEQ = Gauge("syncer_feed_head_seq", "The newest event seq the feed has seen.")
PRUNED_THROUGH = Gauge(
    "syncer_feed_pruned_through_seq", "Every event up to this seq was removed by retention."
)
STREAMS_OPEN = Gauge("syncer_feed_streams_open", "Server-Sent Events streams open.")
POLLS_WAITING = Gauge("syncer_feed_long_polls_waiting", "Long-poll requests waiting for events.")
EVENTS_DELIVERED = Counter(
    "syncer_feed_events_delivered",
    "Events sent to clients, by transport (sse, poll).",
    ["transport"],
)
REFUSALS = Counter(
    "syncer_feed_refusals",
    "/v1/ requests refused, by status (400 bad input, 401 token, 404, 410 cursor gone, "
    "413 body too large, 503 too many streams or database unavailable).",
    ["status"],
)
STREAMS_REFUSED = Counter(
    "syncer_feed_streams_refused",
    "Streams and long-polls refused (503) because feed.max_streams were open.",
)
STREAMS_CUT = Counter(
    "syncer_feed_streams_cut",
    "Streams the server ended: slow (a client that took no bytes for too long), shutdown.",
    ["reason"],
)
LISTENER_RECONNECTS = Counter(
    "syncer_feed_listener_reconnects", "Times the LISTEN connection was re-established."
)
EVENTS_PRUNED = Counter("syncer_feed_events_pruned", "Events removed by retention.")
CONSUMER_LAG_EVENTS = Gauge(
    "syncer_feed_consumer_lag_events",
    "Events after a stored consumer offset (PUT /v1/consumers/{name}).",
    ["consumer"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "syncer_feed_consumer_lag_seconds",
    "Age of the oldest event a stored consumer offset has not passed (0 when caught up).",
    ["consumer"],
)
