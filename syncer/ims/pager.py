"""Marker paging over ``GET /v2/cloudimages`` that cannot be fooled.

``iter_listing`` yields a partition's images page by page, in ``created_at`` order, each image
exactly once. Returning normally means the listing is COMPLETE; anything short of that raises
(``PagingError``, ``ApiError``, ``MalformedResponse``). It stays correct whichever way the real
service resolved what Huawei's documents leave open (reference/ims-api-facts.md):

* ``page_info`` may be missing: the next marker is then the last image's id;
* the server may cap ``limit`` below what we ask: a short page is never taken as the end;
* an unknown marker (its image deleted since the previous page) may be a 400 ``IMG.0066`` or
  an empty page: either way the scan *resumes* with a markerless request
  ``created_at=gte:<second of the last image seen>`` and drops the images of that second it
  has already yielded (it keeps only the ids of the current second, so memory is
  O(images per second), never O(listing)).

No answer is taken for the end on its word. Whatever way a listing seems to end — ``page_info``
without ``next_marker``, an empty page after a marker — the end is CONFIRMED by one request past
it: the same markerless ``created_at=gte:<last second>`` resume, which must bring nothing new
(a gateway or proxy that cuts a listing short is caught there, and so is a vanished marker).
Only images created before the listing began must be listed, so once the scan has reached
images created after its start (the first answer's ``Date``, the API's own clock, plus a skew
margin) everything older has been passed and the end needs no confirmation. A catalog that
keeps growing at its tail therefore cannot keep a listing from ending: when a confirmation
found new images, the next one waits (once) until the API's clock is past that margin, so
whatever it finds is either older (a cut: go on) or provably newer than the start (the end).
An empty page after a marker while confirming (a crowd of one second larger than a page) is
settled by a probe ``id=<marker>``.

The sort is explicit and stable under change: ``sort_key=created_at&sort_dir=asc``. An image
keeps its ``created_at`` for life, so updates during the scan do not move it, and images
created during the scan land at the end. See docs/client.md for the full rule set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from syncer.errors import ApiError, MalformedResponse, PagingError
from syncer.ims.client import UNKNOWN_MARKER, ListPage
from syncer.ims.wire import WireImage, parse_time

log = logging.getLogger(__name__)

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DEFAULT_MAX_RESUMES = 20
#: How far the API's creation stamps may run ahead of its Date header (clocks, rounding).
CLOCK_SKEW = timedelta(seconds=2)


class PageSource(Protocol):
    """What the pager needs of a client (``ImsClient`` is one)."""

    async def list_images(
        self, region: str, query: Sequence[tuple[str, str]], *, partition: str
    ) -> ListPage: ...


@dataclass(frozen=True)
class Listing:
    """What to list: one partition, optionally only what changed since a moment (delta)."""

    region: str
    image_type: str
    page_size: int
    updated_since: datetime | None = None  # delta mode: updated_at=gte:<this>

    def query(
        self, *, marker: str | None = None, created_since: datetime | None = None
    ) -> list[tuple[str, str]]:
        """The query pairs of one request (the client sorts and encodes them)."""
        pairs = [
            ("__imagetype", self.image_type),
            ("limit", str(self.page_size)),
            ("sort_key", "created_at"),
            ("sort_dir", "asc"),
        ]
        if self.updated_since is not None:
            pairs.append(("updated_at", f"gte:{format_time(self.updated_since)}"))
        if created_since is not None:
            pairs.append(("created_at", f"gte:{format_time(created_since)}"))
        if marker is not None:
            pairs.append(("marker", marker))
        return pairs


@dataclass
class ListingStats:
    """Filled in while a listing runs (readable after a failure too)."""

    requests: int = 0  # listing requests answered (pages, empty pages, IMG.0066)
    pages: int = 0  # pages yielded (non-empty after dropping replays)
    images: int = 0  # images yielded
    resumes: int = 0  # markerless created_at=gte requests (confirmations included)
    confirmations: int = 0  # of those, the ones that confirmed an apparent end
    probes: int = 0  # id=<marker> requests settling an empty page while confirming
    replayed: int = 0  # images dropped because a resume returned them again
    anomalies: int = 0  # server oddities tolerated (next_marker ≠ last id, bad created_at)
    started_at: datetime | None = None  # the first answer's Date (else our clock at the start)


def format_time(moment: datetime) -> str:
    """UTC, whole seconds (floored), as IMS's ``yyyy-MM-ddThh:mm:ssZ``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0).strftime(TIME_FORMAT)


class _Scan:
    """The pager's memory: where it is, and the ids yielded in the current second."""

    def __init__(
        self, listing: Listing, partition: str, stats: ListingStats, clock_skew: timedelta
    ) -> None:
        self.listing = listing
        self.clock_skew = clock_skew
        self.first_answer_at = 0.0  # time.monotonic() when the first answer arrived
        self.waited = False  # a confirmation already waited out the skew margin
        self.partition = partition
        self.stats = stats
        self.page_no = 0  # answers received, for messages
        self.last_id: str | None = None
        self.last_created: datetime | None = None
        self.second: datetime | None = None  # the second of last_created
        self.ids_in_second: set[str] = set()  # yielded ids of that second
        self.replay: set[str] = set()  # of those, ids a resume may send again (dropped once)
        self.confirming = False  # a markerless resume was sent, nothing new seen since

    def fail(self, message: str) -> PagingError:
        return PagingError(message, partition=self.partition)

    def resume_from(self) -> datetime | None:
        self.replay = set(self.ids_in_second)
        self.confirming = True
        return self.second

    def past_the_start(self) -> bool:
        """Has the scan reached images created after the listing began (so every image
        created before it has been passed)?"""
        started = self.stats.started_at
        return (
            started is not None
            and self.second is not None
            and self.second > started + self.clock_skew
        )

    async def wait_out_the_skew(self) -> None:
        """Before a confirmation that follows one which found new images created around the
        listing's start (a catalog growing at its tail): let the API's clock pass the start +
        skew (+1 s: Date is floored), once per listing."""
        started = self.stats.started_at
        if (
            self.waited
            or self.stats.confirmations == 0
            or started is None
            or self.second is None
            or self.second < started - self.clock_skew
        ):
            return
        self.waited = True
        remaining = self.first_answer_at + self.clock_skew.total_seconds() + 1.0
        remaining -= time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)

    def _where(self, position: int) -> str:
        return f"page {self.page_no}, position {position}"

    def accept(self, images: list[WireImage], request_id: str | None) -> list[WireImage]:
        """Check one page against everything seen; the images not yet yielded, in order."""
        fresh: list[WireImage] = []
        last_text: object = None  # created_at text of the previous image and its second
        last_second: datetime | None = None
        for position, obj in enumerate(images):
            image_id = obj.id
            if not isinstance(image_id, str) or not image_id.strip():
                raise MalformedResponse(
                    f"image without a usable id at {self._where(position)}",
                    status=200,
                    request_id=request_id,
                    region=self.listing.region,
                    partition=self.partition,
                )
            text = obj.created_at
            if text == last_text and last_second is not None:  # crowds share their second
                created = second = last_second
            elif (parsed := parse_time(text)) is not None:
                created = parsed
                second = created.replace(microsecond=0) if created.microsecond else created
                last_text, last_second = text, second
            else:
                # A value that does not fit is not a reason to fail the partition: the image
                # keeps its place in the order the server gave, in the current second.
                self.stats.anomalies += 1
                log.warning(
                    "image without a parseable created_at; kept in the server's order",
                    extra={
                        "partition": self.partition,
                        "image_id": image_id,
                        "created_at": repr(text)[:60],
                    },
                )
                if self.second is None:  # nothing placed the scan in time yet
                    if image_id in self.ids_in_second:
                        raise self.fail(
                            f"image {image_id} listed twice (again at {self._where(position)})"
                        )
                    self.ids_in_second.add(image_id)
                    self.confirming = False
                    fresh.append(obj)
                    self.last_id = image_id
                    continue
                created = second = self.second
            if self.second is not None and second < self.second:
                raise self.fail(
                    f"order violated at {self._where(position)}: image {image_id} created_at "
                    f"{text} comes after image {self.last_id} created_at "
                    f"{format_time(self.last_created or self.second)} (asked for created_at asc)"
                )
            if second != self.second:
                self.second = second
                self.ids_in_second = set()
                self.replay = set()
            if image_id in self.replay:
                self.replay.discard(image_id)
                self.stats.replayed += 1
            elif image_id in self.ids_in_second:
                raise self.fail(f"image {image_id} listed twice (again at {self._where(position)})")
            else:
                self.ids_in_second.add(image_id)
                self.confirming = False
                fresh.append(obj)
            self.last_id = image_id
            self.last_created = created
        return fresh


async def iter_listing(
    client: PageSource,
    listing: Listing,
    *,
    partition: str,
    stats: ListingStats | None = None,
    max_resumes: int = DEFAULT_MAX_RESUMES,
    clock_skew: timedelta = CLOCK_SKEW,
) -> AsyncIterator[list[WireImage]]:
    """Yield each page's new images in order; return only when the listing is complete.

    Raises ``PagingError`` for a listing that cannot be trusted (stuck marker, an id twice,
    order violated, too many resumes) and lets ``ApiError``/``MalformedResponse`` through.
    """
    stats = stats if stats is not None else ListingStats()
    scan = _Scan(listing, partition, stats, clock_skew)
    marker: str | None = None
    created_since: datetime | None = None
    extra: dict[str, Any] = {"partition": partition, "region": listing.region}
    began = datetime.now(UTC)

    while True:
        query = listing.query(marker=marker, created_since=created_since)
        try:
            page = await client.list_images(listing.region, query, partition=partition)
        except ApiError as e:
            if e.code != UNKNOWN_MARKER or marker is None:
                raise
            stats.requests += 1
            scan.page_no += 1
            created_since = _resume(scan, max_resumes, f"marker {marker} unknown (IMG.0066)")
            marker = None
            continue
        stats.requests += 1
        scan.page_no += 1
        if stats.started_at is None:
            stats.started_at = page.server_time or began
            scan.first_answer_at = time.monotonic()

        if not page.images:
            if marker is None:
                # A markerless request (first, or a resume) found nothing, not even the images
                # of the second it resumed at: the true end.
                return
            # The end, a vanished marker (the alternative "unknown marker → empty page"), or a
            # listing cut short. While confirming, a probe tells the end (the marker image
            # still exists, so nothing follows it) from a vanished marker.
            if scan.past_the_start():
                return
            if scan.confirming:
                exists = await _marker_exists(client, listing, marker, scan)
                if exists or exists is None:
                    # (Inconclusive probe: the confirmation already re-walked to this marker,
                    # which was just listed, and found nothing new after it — the end.)
                    return
                reason = f"empty page after marker {marker}, which is gone"
            else:
                reason = f"empty page after marker {marker}"
            created_since = await _confirm(scan, max_resumes, reason)
            marker = None
            continue

        fresh = scan.accept(page.images, page.request_id)
        last_id = scan.last_id
        assert last_id is not None
        if marker is not None and last_id == marker:
            raise scan.fail(
                f"marker did not advance: page {scan.page_no} ends with the marker {marker} "
                "it was asked to start after"
            )
        if page.next_marker is not None and page.next_marker != last_id:
            stats.anomalies += 1
            log.warning(
                "next_marker differs from the last image id; paging from the last image",
                extra=extra | {"next_marker": page.next_marker, "last_id": last_id},
            )
        if fresh:
            stats.pages += 1
            stats.images += len(fresh)
            yield fresh
        marker, created_since = last_id, None
        if page.has_page_info and page.next_marker is None:
            # The server says this was the last page. Taken on its word only while confirming
            # (nothing new since the confirmation began) or past the listing's start.
            if scan.confirming or scan.past_the_start():
                return
            created_since = await _confirm(scan, max_resumes, "page_info without next_marker")
            marker = None


async def _marker_exists(
    client: PageSource, listing: Listing, marker: str, scan: _Scan
) -> bool | None:
    """Does the marker image still exist? ``GET ?__imagetype=T&id=<marker>``.

    True: it is listed; False: an empty answer; None: inconclusive (the server answered with
    other images, i.e. ignores the ``id`` filter, or refused the probe with a 400).
    """
    stats = scan.stats
    query = [("__imagetype", listing.image_type), ("id", marker), ("limit", "1")]
    try:
        page = await client.list_images(listing.region, query, partition=scan.partition)
    except ApiError as e:
        if e.status != 400:
            raise
        stats.requests += 1
        stats.probes += 1
        return None
    stats.requests += 1
    stats.probes += 1
    if not page.images:
        return False
    if any(obj.id == marker for obj in page.images):
        return True
    return None


async def _confirm(scan: _Scan, max_resumes: int, reason: str) -> datetime | None:
    """An apparent end: one markerless request past the last second must bring nothing new."""
    await scan.wait_out_the_skew()
    scan.stats.confirmations += 1
    return _resume(scan, max_resumes, f"confirming the end: {reason}")


def _resume(scan: _Scan, max_resumes: int, reason: str) -> datetime | None:
    """Count one markerless resume (failing past the budget); the created_at to resume from
    (None when no image placed the scan in time yet: the listing restarts)."""
    stats = scan.stats
    if stats.resumes >= max_resumes:
        raise scan.fail(
            f"listing incomplete: gave up after {stats.resumes} resumes ({reason}; "
            f"{stats.images} images listed so far)"
        )
    stats.resumes += 1
    since = scan.resume_from()
    log.info(
        "listing resumes without a marker",
        extra={
            "partition": scan.partition,
            "region": scan.listing.region,
            "reason": reason,
            "created_since": format_time(since) if since is not None else None,
            "resumes": stats.resumes,
        },
    )
    return since
