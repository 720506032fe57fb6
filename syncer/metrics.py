"""Every Prometheus metric syncer exports, and the small functions that move them.

A leaf module (it imports only prometheus_client), so ``ims``, ``store``, ``sync`` and the daemon
can all report here. Metrics live in prometheus-client's default ``REGISTRY``, which
``GET /metrics`` serves. Labels are bounded by the configuration: regions, image types, modes,
outcomes, event kinds, HTTP status codes (as strings) and credential names — never an image id,
a request id or a secret. docs/metrics.md lists every name with its type, labels and meaning.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# Counters would each export a second series, ``*_created``, that nobody here reads.
disable_created_metrics()  # type: ignore[no-untyped-call]

PARTITION = ("region", "image_type")
MODES = ("full", "delta")
OUTCOMES = ("ok", "failed", "busy")
EVENT_KINDS = ("created", "status_changed", "updated", "deleted", "restored")

# ---- the IMS client ---------------------------------------------------------------------------

IMS_REQUESTS = Counter(
    "syncer_ims_requests",
    "IMS listing requests sent (every attempt), by region and HTTP status; "
    "status is 'timeout' or 'error' when no answer came.",
    ["region", "status"],
)
IMS_RETRIES = Counter(
    "syncer_ims_retries",
    "IMS and IAM requests retried, by region and reason (throttled, server_error, connection).",
    ["region", "reason"],
)
IMS_THROTTLED = Counter(
    "syncer_ims_throttled",
    "Throttling answers from IMS or its gateway (429, APIGW.0308, IMG.0060), by region.",
    ["region"],
)
IMS_REQUEST_SECONDS = Histogram(
    "syncer_ims_request_duration_seconds",
    "Time from sending an IMS listing request to its whole answer (slot waits excluded).",
    ["region"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
IMS_OVERSIZED = Counter(
    "syncer_ims_oversized_answers",
    "IMS or IAM answers refused for being larger than api.max_answer_bytes, by region.",
    ["region"],
)
IAM_REQUESTS = Counter(
    "syncer_iam_token_requests",
    "IAM token requests (password logins for token auth), by region and HTTP status.",
    ["region", "status"],
)

# ---- credentials the gateway rejects ----------------------------------------------------------

CREDENTIAL_REJECTIONS = Counter(
    "syncer_credential_rejections",
    "401/403 answers that rejected a credential (aksk, token/<region>, iam).",
    ["credential"],
)
CREDENTIAL_HELD_BACK = Gauge(
    "syncer_credential_held_back",
    "1 while a rejected credential is held back (its requests fail without being sent), else 0.",
    ["credential"],
)
CREDENTIAL_HELD_BACK_UNTIL = Gauge(
    "syncer_credential_held_back_until_timestamp_seconds",
    "Unix time at which a held-back credential may send one probe request again (0: not held).",
    ["credential"],
)

# ---- partition passes -------------------------------------------------------------------------

PASSES = Counter(
    "syncer_passes",
    "Partition passes finished, by partition, mode and outcome (ok, failed, busy).",
    [*PARTITION, "mode", "outcome"],
)
PASS_SECONDS = Histogram(
    "syncer_pass_duration_seconds",
    "Duration of partition passes that ran (ok or failed), by mode.",
    ["mode"],
    buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
PAGES = Counter(
    "syncer_pages",
    "Listing pages applied to the database, by partition and mode.",
    [*PARTITION, "mode"],
)
IMAGES_SEEN = Counter(
    "syncer_images_seen",
    "Images listed by passes (each image of each page), by partition and mode.",
    [*PARTITION, "mode"],
)
ROWS_WRITTEN = Counter(
    "syncer_rows_written",
    "Image rows inserted or updated (an unchanged image costs none), by partition.",
    list(PARTITION),
)
EVENTS = Counter(
    "syncer_events",
    "Change events appended to ims.image_events, by partition and kind.",
    [*PARTITION, "kind"],
)
LAST_FULL_SWEEP = Gauge(
    "syncer_last_full_sweep_timestamp_seconds",
    "Unix time at which the partition's last COMPLETE full sweep started.",
    list(PARTITION),
)
LAST_SUCCESS = Gauge(
    "syncer_last_success_timestamp_seconds",
    "Unix time at which the partition's last successful pass of this mode started.",
    [*PARTITION, "mode"],
)
LAST_FAILURE = Gauge(
    "syncer_last_failure_timestamp_seconds",
    "Unix time at which the partition's last failed pass ended.",
    list(PARTITION),
)

# ---- the daemon -------------------------------------------------------------------------------

HTTP_REFUSED = Counter(
    "syncer_http_requests_refused",
    "Requests the daemon's HTTP server refused before any route saw them (malformed, or a "
    "request line or header over 8190 bytes, or more than 128 headers), by HTTP status.",
    ["status"],
)
LEASES_HELD = Gauge("syncer_leases_held", "Partition leases this replica holds right now.")
DATABASE_UP = Gauge(
    "syncer_database_up", "1 when the last database check of this process succeeded, else 0."
)


# ---- what the rest of syncer calls ------------------------------------------------------------


def observe_request(region: str, status: int | str, seconds: float | None) -> None:
    """One IMS listing attempt: its HTTP status (or 'timeout' / 'error') and duration."""
    IMS_REQUESTS.labels(region, str(status)).inc()
    if seconds is not None:
        IMS_REQUEST_SECONDS.labels(region).observe(seconds)


def observe_iam_request(region: str, status: int | str) -> None:
    IAM_REQUESTS.labels(region, str(status)).inc()


def observe_throttled(region: str) -> None:
    IMS_THROTTLED.labels(region).inc()


def observe_oversized_answer(region: str) -> None:
    IMS_OVERSIZED.labels(region).inc()


def observe_retry(region: str, reason: str) -> None:
    """``reason``: 'throttled', 'server_error' or 'connection'."""
    IMS_RETRIES.labels(region, reason).inc()


def observe_rejection(credential: str) -> None:
    """A request was rejected (401/403) with ``credential``."""
    CREDENTIAL_REJECTIONS.labels(credential).inc()


def set_credential_hold(credential: str, until: float | None) -> None:
    """``credential`` is held back until the Unix time ``until`` (None: no longer)."""
    CREDENTIAL_HELD_BACK.labels(credential).set(0 if until is None else 1)
    CREDENTIAL_HELD_BACK_UNTIL.labels(credential).set(until or 0)


class _Partition(Protocol):
    @property
    def region(self) -> str: ...
    @property
    def image_type(self) -> str: ...


class _Counts(Protocol):
    @property
    def pages(self) -> int: ...
    @property
    def images_seen(self) -> int: ...
    @property
    def written(self) -> int: ...
    @property
    def by_kind(self) -> Mapping[str, int]: ...


class PassLike(Protocol):
    """What :func:`observe_pass` reads of a ``syncer.sync.engine.PassResult``."""

    @property
    def partition(self) -> _Partition: ...
    @property
    def mode(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def counts(self) -> _Counts: ...
    @property
    def seconds(self) -> float: ...


def observe_pass(result: PassLike, *, now: float | None = None) -> None:
    """A partition pass ended (called once per pass by ``run_pass``, for every caller)."""
    region, image_type = result.partition.region, result.partition.image_type
    mode, outcome, c = result.mode, result.outcome, result.counts
    PASSES.labels(region, image_type, mode, outcome).inc()
    if outcome == "busy":  # it never ran: another pass held the partition
        return
    end = time.time() if now is None else now
    started = end - result.seconds
    PASS_SECONDS.labels(mode).observe(result.seconds)
    if c.pages:
        PAGES.labels(region, image_type, mode).inc(c.pages)
    if c.images_seen:
        IMAGES_SEEN.labels(region, image_type, mode).inc(c.images_seen)
    if c.written:
        ROWS_WRITTEN.labels(region, image_type).inc(c.written)
    for kind, n in c.by_kind.items():
        if n:
            EVENTS.labels(region, image_type, kind).inc(n)
    if outcome == "ok":
        LAST_SUCCESS.labels(region, image_type, mode).set(started)
        if mode == "full":
            LAST_FULL_SWEEP.labels(region, image_type).set(started)
    else:
        LAST_FAILURE.labels(region, image_type).set(end)


def declare_partitions(partitions: Iterable[tuple[str, str]]) -> None:
    """Create every partition's counter series at 0, so that ``rate()`` and ``absent()`` work
    from a process's first scrape (the daemon calls this once at start)."""
    for region, image_type in partitions:
        for mode in MODES:
            for outcome in OUTCOMES:
                PASSES.labels(region, image_type, mode, outcome)
            PAGES.labels(region, image_type, mode)
            IMAGES_SEEN.labels(region, image_type, mode)
        ROWS_WRITTEN.labels(region, image_type)
        for kind in EVENT_KINDS:
            EVENTS.labels(region, image_type, kind)


def set_last_full_sweep(region: str, image_type: str, started_at: float) -> None:
    """Seed the gauge from the database (``ims.partitions.last_full_sweep_at``) at start."""
    LAST_FULL_SWEEP.labels(region, image_type).set(started_at)


def observe_http_refusal(status: int) -> None:
    HTTP_REFUSED.labels(str(status)).inc()


def set_leases_held(n: int) -> None:
    LEASES_HELD.set(n)


def set_database_up(up: bool) -> None:
    DATABASE_UP.set(1 if up else 0)
