"""iter_listing against a scripted listing server: every alternative, every anomaly."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from syncer.config import ApiSettings, Credentials
from syncer.errors import ApiError, MalformedResponse, PagingError
from syncer.ims.client import ImsClient
from syncer.ims.pager import Listing, ListingStats, format_time, iter_listing
from tests.scripted_ims import (
    Answer,
    ListingHandler,
    ScriptedIms,
    Seen,
    image,
    images_at,
    ims_error,
)

REGION = "cn-north-4"
PARTITION = "cn-north-4/private"


async def no_sleep(seconds: float) -> None:
    return None


@pytest.fixture
async def ims() -> AsyncIterator[ScriptedIms]:
    async with ScriptedIms() as server:
        yield server


@pytest.fixture
async def client(ims: ScriptedIms) -> AsyncIterator[ImsClient]:
    api = ApiSettings(endpoint=ims.endpoint, auth="none", max_attempts=3)
    async with ImsClient(api, Credentials(), sleep=no_sleep, rng=random.Random(0)) as c:
        yield c


async def collect(
    client: ImsClient,
    page_size: int = 5,
    *,
    stats: ListingStats | None = None,
    updated_since: datetime | None = None,
    max_resumes: int = 20,
) -> list[str]:
    listing = Listing(REGION, "private", page_size, updated_since=updated_since)
    ids: list[str] = []
    async for page in iter_listing(
        client, listing, partition=PARTITION, stats=stats, max_resumes=max_resumes
    ):
        assert page, "no empty page is yielded"
        ids.extend(obj["id"] for obj in page)
    return ids


def ids_of(images: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in sorted(images, key=lambda i: (i["created_at"], i["id"]))]


# ---- the query ------------------------------------------------------------------------------


async def test_query_is_explicitly_sorted_and_filtered(ims: ScriptedIms, client: ImsClient) -> None:
    ims.handler = ListingHandler(images_at(range(10)))
    since = datetime(2024, 1, 1, 0, 0, 3, 999_000, tzinfo=UTC)
    await collect(client, 5, updated_since=since)
    first, second, confirmation = ims.listing_requests()
    assert sorted(first.pairs) == [
        ("__imagetype", "private"),
        ("limit", "5"),
        ("sort_dir", "asc"),
        ("sort_key", "created_at"),
        ("updated_at", "gte:2024-01-01T00:00:03Z"),  # floored to the second: never misses
    ]
    assert second.param("marker") == "img-0007"
    assert second.param("updated_at") == "gte:2024-01-01T00:00:03Z"
    # the apparent end is confirmed past the last second, with the same filter
    assert confirmation.param("marker") is None
    assert confirmation.param("created_at") == "gte:2024-01-01T00:00:09Z"
    assert confirmation.param("updated_at") == "gte:2024-01-01T00:00:03Z"


def test_format_time_is_utc_whole_seconds() -> None:
    plus8 = timezone(timedelta(hours=8))
    assert format_time(datetime(2024, 1, 1, 8, 0, 1, 500_000, tzinfo=plus8)) == (
        "2024-01-01T00:00:01Z"
    )
    assert format_time(datetime(2024, 1, 1, 0, 0, 1)) == "2024-01-01T00:00:01Z"


# ---- the documented behaviour and its alternatives ------------------------------------------


async def test_lists_everything_once_and_stops_on_the_last_page(
    ims: ScriptedIms, client: ImsClient
) -> None:
    data = images_at(range(12))
    ims.handler = ListingHandler(data)
    stats = ListingStats()
    assert await collect(client, 5, stats=stats) == ids_of(data)
    # The short last page is not taken on its word: one request past its last second.
    assert stats.started_at is not None
    assert stats == ListingStats(
        requests=4,
        pages=3,
        images=12,
        resumes=1,
        confirmations=1,
        replayed=1,
        started_at=stats.started_at,
    )
    assert ims.listing_requests()[-1].param("created_at") == "gte:2024-01-01T00:00:11Z"


async def test_no_confirmation_once_past_the_listing_start(
    ims: ScriptedIms, client: ImsClient
) -> None:
    """Images created after the listing began need not be listed: reaching them ends it."""
    future = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    data = images_at(range(12), start=future)
    ims.handler = ListingHandler(data)
    stats = ListingStats()
    assert await collect(client, 5, stats=stats) == ids_of(data)
    assert (stats.requests, stats.confirmations) == (3, 0)


async def test_empty_listing(ims: ScriptedIms, client: ImsClient) -> None:
    ims.handler = ListingHandler([])
    stats = ListingStats()
    assert await collect(client, stats=stats) == []
    assert stats.requests == 1


async def test_exact_page_boundary_ends_on_a_confirmed_empty_page(
    ims: ScriptedIms, client: ImsClient
) -> None:
    data = images_at(range(10))
    ims.handler = ListingHandler(data)
    stats = ListingStats()
    assert await collect(client, 5, stats=stats) == ids_of(data)
    requests = ims.listing_requests()
    assert [r.param("marker") for r in requests] == [None, "img-0004", "img-0009", None]
    confirmation = requests[-1]  # the empty page is confirmed past the last second
    assert confirmation.param("created_at") == "gte:2024-01-01T00:00:09Z"
    assert (stats.probes, stats.resumes, stats.pages, stats.requests) == (0, 1, 2, 4)


@pytest.mark.parametrize("probe_answer", ["ignores-id", "400"])
async def test_inconclusive_probe_falls_back_to_a_created_at_resume(
    ims: ScriptedIms, client: ImsClient, probe_answer: str
) -> None:
    data = images_at([0, 1, 2, 3, 3, 3])
    handler = ListingHandler(data, page_info=False)

    def override(seen: Seen, n: int) -> Answer | None:
        if seen.param("id") is None:
            return None
        if probe_answer == "400":
            return ims_error(400, "IMG.0017", "bad URL condition")
        return Answer(200, {"images": handler.ordered()[:1]})  # the filter is ignored

    handler.override = override
    ims.handler = handler
    stats = ListingStats()
    assert await collect(client, 3, stats=stats) == ids_of(data)
    markers = [(r.param("marker"), r.param("id"), r.param("created_at")) for r in ims.seen]
    assert markers == [
        (None, None, None),
        ("img-0002", None, None),
        ("img-0005", None, None),  # empty
        (None, None, "gte:2024-01-01T00:00:03Z"),  # confirmation: replays 3..5, nothing new
        ("img-0005", None, None),  # empty again (a full page of replays came before)
        (None, "img-0005", None),  # probe: inconclusive, but the confirmation found nothing
    ]
    assert (stats.resumes, stats.replayed, stats.probes) == (1, 3, 1)


@pytest.mark.parametrize("unknown_marker", ["error", "empty"])
async def test_without_page_info(ims: ScriptedIms, client: ImsClient, unknown_marker: str) -> None:
    data = images_at(n // 3 for n in range(23))
    ims.handler = ListingHandler(data, page_info=False, unknown_marker=unknown_marker)
    stats = ListingStats()
    assert await collect(client, 5, stats=stats) == ids_of(data)
    # The end is an empty page after a marker, confirmed past the last second (the page of
    # replays that answers it is short: without page_info, one more marker request and a
    # probe that finds the marker settle it).
    assert (stats.confirmations, stats.probes) == (1, 1)


async def test_server_cap_below_limit_short_pages_are_not_the_end(
    ims: ScriptedIms, client: ImsClient
) -> None:
    data = images_at(range(40))
    handler = ListingHandler(data, page_info=False, max_limit=7)
    ims.handler = handler
    assert await collect(client, 10) == ids_of(data)
    assert all(r.param("limit") == "10" for r in ims.listing_requests() if not r.param("id"))


async def test_short_page_mid_listing_with_page_info_and_next_marker(
    ims: ScriptedIms, client: ImsClient
) -> None:
    # A server that caps at 3 but still sends next_marker on its "full" pages.
    data = images_at(range(8))
    ims.handler = ListingHandler(data, max_limit=3)
    assert await collect(client, 10) == ids_of(data)


@pytest.mark.parametrize("cut", ["page_info without next_marker", "empty page"])
async def test_a_listing_cut_short_is_not_taken_for_complete(
    ims: ScriptedIms, client: ImsClient, cut: str
) -> None:
    """A gateway or proxy that ends a listing early: the confirmation finds the rest."""
    data = images_at(range(23))
    handler = ListingHandler(data)

    def override(seen: Seen, n: int) -> Answer | None:
        if n == 2 and cut == "page_info without next_marker":
            page = handler.ordered()[5:10]  # a full page, but it says it is the last one
            return Answer(200, {"images": page, "page_info": {}})
        if n == 3 and cut == "empty page":
            return Answer(200, {"images": [], "page_info": {}})
        return None

    handler.override = override
    ims.handler = handler
    stats = ListingStats()
    assert await collect(client, 5, stats=stats) == ids_of(data)
    assert stats.confirmations == 2  # the cut, and the true end


async def test_next_marker_differing_from_last_id_pages_from_last_id(
    ims: ScriptedIms, client: ImsClient, caplog: pytest.LogCaptureFixture
) -> None:
    data = images_at(range(8))
    handler = ListingHandler(data)

    def override(seen: Seen, n: int) -> Answer | None:
        if n == 1:
            return Answer(
                200, {"images": handler.ordered()[:5], "page_info": {"next_marker": "zz"}}
            )
        return None

    handler.override = override
    ims.handler = handler
    stats = ListingStats()
    assert await collect(client, 5, stats=stats) == ids_of(data)
    assert ims.listing_requests()[1].param("marker") == "img-0004"
    assert stats.anomalies == 1
    assert any("next_marker differs" in r.getMessage() for r in caplog.records)


# ---- a marker that vanishes -----------------------------------------------------------------


@pytest.mark.parametrize("unknown_marker", ["error", "empty"])
@pytest.mark.parametrize("page_info", [True, False])
async def test_marker_deleted_between_pages_resumes(
    ims: ScriptedIms, client: ImsClient, unknown_marker: str, page_info: bool
) -> None:
    # Seconds 0,0,1,1,1,2,2,2,2,3,... so the marker's second has neighbours before and after.
    data = images_at(n // 3 for n in range(30))
    handler = ListingHandler(data, page_info=page_info, unknown_marker=unknown_marker)
    deleted: list[str] = []
    marker_requests = 0

    def before(seen: Seen, n: int) -> None:
        nonlocal marker_requests
        if marker := seen.param("marker"):
            marker_requests += 1
            if marker_requests in (1, 3):  # the marker image vanishes just before its use
                handler.delete(marker)
                deleted.append(marker)

    handler.before = before
    ims.handler = handler
    stats = ListingStats()
    got = await collect(client, 4, stats=stats)
    assert len(got) == len(set(got)) == 30  # each exactly once (the deleted ones were seen)
    assert got == ids_of(data)
    assert len(deleted) == 2
    assert stats.resumes >= 2
    resumes = [r for r in ims.listing_requests()[1:] if r.param("created_at")]
    assert all(r.param("marker") is None for r in resumes)


async def test_resume_budget_exhausted_fails(ims: ScriptedIms, client: ImsClient) -> None:
    data = images_at(range(30))
    handler = ListingHandler(data, unknown_marker="error")

    def before(seen: Seen, n: int) -> None:
        if marker := seen.param("marker"):
            handler.delete(marker)  # every marker vanishes

    handler.before = before
    ims.handler = handler
    stats = ListingStats()
    with pytest.raises(PagingError, match="gave up after 3 resumes") as raised:
        await collect(client, 2, stats=stats, max_resumes=3)
    assert raised.value.partition == PARTITION
    assert stats.resumes == 3


async def test_empty_page_after_vanished_marker_is_not_taken_for_the_end(
    ims: ScriptedIms, client: ImsClient
) -> None:
    data = images_at(range(20))
    handler = ListingHandler(data, unknown_marker="empty")

    def before(seen: Seen, n: int) -> None:
        if n == 2:
            handler.delete(seen.param("marker") or "")

    handler.before = before
    ims.handler = handler
    got = await collect(client, 5)
    assert got == ids_of(data)


# ---- many images in one second --------------------------------------------------------------


@pytest.mark.parametrize("unknown_marker", ["error", "empty"])
async def test_many_images_in_one_second_across_pages_and_resumes(
    ims: ScriptedIms, client: ImsClient, unknown_marker: str
) -> None:
    data = images_at([0] * 3 + [1] * 23 + [2] * 4)
    handler = ListingHandler(data, page_info=False, max_limit=4, unknown_marker=unknown_marker)

    def before(seen: Seen, n: int) -> None:
        if n in (3, 6) and (marker := seen.param("marker")):
            handler.delete(marker)  # the marker in the crowded second vanishes, twice

    handler.before = before
    ims.handler = handler
    stats = ListingStats()
    got = await collect(client, 5, stats=stats)
    assert got == ids_of(data)
    assert stats.resumes >= 2 and stats.replayed > 0


# ---- anomalies that must fail the listing ---------------------------------------------------


async def test_same_id_twice_is_a_paging_error(ims: ScriptedIms, client: ImsClient) -> None:
    handler = ListingHandler(images_at(range(10)))

    def override(seen: Seen, n: int) -> Answer | None:
        if n == 2:  # the second page repeats the first one's last image
            page = handler.ordered()[4:9]
            return Answer(200, {"images": page, "page_info": {"next_marker": page[-1]["id"]}})
        return None

    handler.override = override
    ims.handler = handler
    with pytest.raises(PagingError, match="img-0004 listed twice") as raised:
        await collect(client, 5)
    assert PARTITION in str(raised.value)


async def test_same_id_twice_within_a_page(ims: ScriptedIms, client: ImsClient) -> None:
    dup = [image(1, 0), image(1, 0)]
    ims.handler = ListingHandler(dup)
    with pytest.raises(PagingError, match="listed twice"):
        await collect(client, 5)


async def test_server_ignoring_the_marker_is_a_paging_error(
    ims: ScriptedIms, client: ImsClient
) -> None:
    handler = ListingHandler(images_at([0] * 10))
    handler.override = (
        lambda seen, n: Answer(  # the first page, whatever the marker
            200, {"images": handler.ordered()[:5], "page_info": {"next_marker": "img-0004"}}
        )
    )
    ims.handler = handler
    with pytest.raises(PagingError, match="img-0000 listed twice"):
        await collect(client, 5)
    assert len(ims.listing_requests()) == 2


async def test_marker_that_does_not_advance_is_a_paging_error(
    ims: ScriptedIms, client: ImsClient
) -> None:
    handler = ListingHandler(images_at(range(10)))

    def override(seen: Seen, n: int) -> Answer | None:
        if seen.param("marker") == "img-0004":  # a page that ends on the marker it was given
            page = [*handler.ordered()[5:7], image(4, 8)]
            return Answer(200, {"images": page, "page_info": {"next_marker": "img-0004"}})
        return None

    handler.override = override
    ims.handler = handler
    with pytest.raises(PagingError, match="marker did not advance: page 2 ends with the marker"):
        await collect(client, 5)


async def test_order_violation_is_a_paging_error(ims: ScriptedIms, client: ImsClient) -> None:
    data = images_at(range(10))
    data[6]["created_at"] = "2023-12-31T23:59:59Z"  # sorted "wrongly" by the server below
    handler = ListingHandler(data)
    handler.ordered = lambda: sorted(handler.images, key=lambda i: i["id"])  # type: ignore[method-assign]
    ims.handler = handler
    with pytest.raises(PagingError, match="order violated at page 2, position 1: image img-0006"):
        await collect(client, 5)


async def test_descending_server_is_an_order_violation(ims: ScriptedIms, client: ImsClient) -> None:
    handler = ListingHandler(images_at(range(10)))
    handler.ordered = lambda: sorted(  # type: ignore[method-assign]
        handler.images, key=lambda i: i["created_at"], reverse=True
    )
    ims.handler = handler
    with pytest.raises(PagingError, match="order violated"):
        await collect(client, 5)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ({"name": "no id", "created_at": "2024-01-01T00:00:00Z"}, "without a usable id"),
        ({"id": "", "created_at": "2024-01-01T00:00:00Z"}, "without a usable id"),
        ({"id": 17, "created_at": "2024-01-01T00:00:00Z"}, "without a usable id"),
    ],
)
async def test_unusable_objects_fail_the_partition(
    ims: ScriptedIms, client: ImsClient, bad: dict[str, Any], fragment: str
) -> None:
    page = [image(0, 0), image(1, 0), bad]
    ims.handler = ListingHandler([])
    ims.handler.override = lambda seen, n: Answer(200, {"images": page, "page_info": {}})
    with pytest.raises(MalformedResponse) as raised:
        await collect(client, 5)
    assert fragment in str(raised.value)
    assert raised.value.partition == PARTITION
    if "usable id" in fragment:
        assert "page 1, position 2" in str(raised.value)


@pytest.mark.parametrize("created_at", [None, "yesterday", 17, "2024-13-45T99:00:00Z"])
async def test_an_unparseable_created_at_keeps_the_image(
    ims: ScriptedIms, client: ImsClient, created_at: Any
) -> None:
    """A value that does not fit never fails the partition: the image keeps its place."""
    odd = {"id": "odd"} if created_at is None else {"id": "odd", "created_at": created_at}
    page = [image(0, 0), odd, image(1, 0)]
    ims.handler = ListingHandler([])
    ims.handler.override = lambda seen, n: Answer(200, {"images": page, "page_info": {}})
    stats = ListingStats()
    assert await collect(client, 5, stats=stats) == ["img-0000", "odd", "img-0001"]
    assert stats.anomalies == 2  # once in the page, once in the confirmation's replay


async def test_api_errors_pass_through(ims: ScriptedIms, client: ImsClient) -> None:
    handler = ListingHandler(images_at(range(10)))
    handler.override = lambda seen, n: ims_error(400, "IMG.0024") if n == 2 else None
    ims.handler = handler
    with pytest.raises(ApiError) as raised:
        await collect(client, 5)
    assert raised.value.code == "IMG.0024"


async def test_unknown_marker_on_a_markerless_request_is_not_resumed(
    ims: ScriptedIms, client: ImsClient
) -> None:
    ims.handler = ListingHandler([])
    ims.handler.override = lambda seen, n: ims_error(400, "IMG.0066")
    with pytest.raises(ApiError) as raised:
        await collect(client, 5)
    assert raised.value.code == "IMG.0066"


async def test_consumer_may_stop_early(ims: ScriptedIms, client: ImsClient) -> None:
    ims.handler = ListingHandler(images_at(range(20)))
    listing = Listing(REGION, "private", 5)
    pages = iter_listing(client, listing, partition=PARTITION)
    async for _ in pages:
        break
    await pages.aclose()  # type: ignore[attr-defined]
    assert len(ims.listing_requests()) == 1
