"""iter_listing and ImsClient against the IMS simulator, under every documented alternative."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncer.config import ApiSettings, Credentials
from syncer.errors import AuthError, MalformedResponse
from syncer.ims.client import ImsClient
from syncer.ims.pager import Listing, ListingStats, iter_listing
from syncer.simulator import Catalog, FaultRule, Simulator

REGION = "cn-north-4"
AK, SK = "AKINTEGRATION0001", "SKINTEGRATION0002secret"
ALTERNATIVES = [
    pytest.param({}, id="documented"),
    pytest.param({"page_info": False}, id="no-page-info"),
    pytest.param({"max_limit": 17}, id="cap-17"),
    pytest.param({"unknown_marker": "empty"}, id="unknown-marker-empty"),
    pytest.param(
        {"page_info": False, "max_limit": 13, "unknown_marker": "empty"}, id="all-alternatives"
    ),
]


async def no_sleep(seconds: float) -> None:
    return None


def client_for(sim: Simulator, *, auth: str = "aksk", sk: str = SK, **api: Any) -> ImsClient:
    settings = ApiSettings(
        endpoint=sim.endpoint_template,
        iam_endpoint=sim.endpoint_template,
        auth=auth,  # type: ignore[arg-type]
        max_attempts=api.pop("max_attempts", 8),
        **api,
    )
    credentials = Credentials(
        ak=AK, sk=sk, project_id="p1", domain="dom", username="alice", password="pw-secret"
    )
    return ImsClient(settings, credentials, sleep=no_sleep, rng=random.Random(5))


async def list_all(
    client: ImsClient,
    image_type: str = "private",
    page_size: int = 40,
    *,
    stats: ListingStats | None = None,
    updated_since: datetime | None = None,
) -> list[dict[str, Any]]:
    listing = Listing(REGION, image_type, page_size, updated_since=updated_since)
    out: list[dict[str, Any]] = []
    async for page in iter_listing(
        client, listing, partition=f"{REGION}/{image_type}", stats=stats, clock_skew=timedelta(0)
    ):
        out.extend(page)
    return out


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(regions=[REGION], images_per_partition=230, seed=11)


@pytest.mark.parametrize("options", ALTERNATIVES)
async def test_still_catalog_listed_exactly(catalog: Catalog, options: dict[str, Any]) -> None:
    sim = Simulator(catalog, auth="aksk", ak=AK, sk=SK, **options)
    async with sim, client_for(sim) as client:
        stats = ListingStats()
        got = await list_all(client, stats=stats)
    assert [i["id"] for i in got] == [i["id"] for i in catalog.images(REGION, "private")]
    assert got == catalog.images(REGION, "private")  # objects as sent, nothing dropped
    assert stats.images == 230
    assert all(r.status == 200 for r in sim.requests)


@pytest.mark.parametrize("options", ALTERNATIVES)
@pytest.mark.parametrize("deleted_visible", [0, 3600])
async def test_catalog_changing_between_pages(
    options: dict[str, Any], deleted_visible: int
) -> None:
    catalog = Catalog(
        regions=[REGION], images_per_partition=300, seed=7, deleted_visible_seconds=deleted_visible
    )
    start = {i["id"] for i in catalog.images(REGION, "private")}
    rng = random.Random(99)
    touched: set[str] = set()  # deleted during the scan
    created: set[str] = set()

    def before_request(pairs: list[tuple[str, str]]) -> None:
        marker = next((v for k, v in pairs if k == "marker"), None)
        live = [i["id"] for i in catalog.images(REGION, "private") if i["status"] != "deleted"]
        if marker and rng.random() < 0.25 and catalog.get(REGION, marker) is not None:
            catalog.delete(REGION, marker)  # the marker vanishes under the pager's feet
            touched.add(marker)
        for image_id in rng.sample(live, 3):  # anywhere: seen, unseen, anything
            if image_id not in touched:
                catalog.delete(REGION, image_id)
                touched.add(image_id)
        for image_id in rng.sample(live, 4):
            if image_id not in touched:
                catalog.update(REGION, image_id, name=f"renamed {rng.random():.6f}")
        created.add(catalog.create(REGION, "private", name="new during scan")["id"])

    async with Simulator(catalog, **options) as sim:
        sim.before_request = before_request
        async with client_for(sim, auth="none") as client:
            stats = ListingStats()
            got = [i["id"] for i in await list_all(client, page_size=25, stats=stats)]

    assert len(got) == len(set(got)), "an image was yielded twice"
    assert set(got) <= start | created
    throughout = start - touched
    assert throughout <= set(got), f"missed {sorted(throughout - set(got))[:5]}"
    assert len(touched) > 30 and len(created) > 10 and stats.requests > 10
    assert stats.resumes > 0 or deleted_visible  # markers did vanish (unless kept listed)


@pytest.mark.parametrize("options", ALTERNATIVES)
async def test_transient_faults_are_ridden_out(catalog: Catalog, options: dict[str, Any]) -> None:
    faults = [
        FaultRule("429", rate=0.2, delay=0.0),
        FaultRule("500", rate=0.1),
        FaultRule("503", rate=0.1),
        FaultRule("drop", rate=0.1),
        FaultRule("truncated", rate=0.1),
    ]
    async with (
        Simulator(catalog, auth="aksk", ak=AK, sk=SK, faults=faults, seed=4, **options) as sim,
        client_for(sim, max_attempts=12) as client,
    ):
        got = await list_all(client, page_size=30)
    assert [i["id"] for i in got] == [i["id"] for i in catalog.images(REGION, "private")]
    assert sum(sim.fired.values()) > 0


async def test_malformed_page_fails_the_listing(catalog: Catalog) -> None:
    faults = [FaultRule("malformed", with_marker=True, times=1)]
    async with Simulator(catalog, faults=faults) as sim, client_for(sim, auth="none") as client:
        with pytest.raises(MalformedResponse, match="not valid JSON"):
            await list_all(client)
    assert sim.fired["malformed"] == 1


async def test_delta_listing_sees_only_what_changed(catalog: Catalog) -> None:
    now = [2_000_000_000.0]
    catalog.clock = lambda: now[0]
    since = datetime.fromtimestamp(now[0], UTC)
    ids = [i["id"] for i in catalog.images(REGION, "private")]
    changed = {ids[3], ids[100], ids[200]}
    for image_id in changed:
        catalog.update(REGION, image_id, name="changed")
    new = catalog.create(REGION, "private", name="brand new")["id"]
    async with Simulator(catalog) as sim, client_for(sim, auth="none") as client:
        got = await list_all(client, page_size=2, updated_since=since)
    assert {i["id"] for i in got} == changed | {new}
    listing_requests = [r for r in sim.requests if not any(k == "id" for k, _ in r.query)]
    assert all(("updated_at", "gte:2033-05-18T03:33:20Z") in r.query for r in listing_requests)


async def test_token_auth_against_simulated_iam(catalog: Catalog) -> None:
    sim = Simulator(catalog, auth="token", iam_users={"dom/alice": "pw-secret"})
    async with sim, client_for(sim, auth="token") as client:
        got = await list_all(client, "gold")
    assert len(got) == 230


async def test_wrong_secret_key_fails_once_and_does_not_lock(catalog: Catalog) -> None:
    async with Simulator(catalog, auth="aksk", ak=AK, sk=SK) as sim:
        async with client_for(sim, sk="wrong") as client:
            with pytest.raises(AuthError) as raised:
                await list_all(client)
        assert len(sim.requests) == 1
        assert raised.value.status == 401 and raised.value.code == "APIGW.0301"
        assert "wrong" not in str(raised.value) and AK not in str(raised.value)
        async with client_for(sim) as client:  # the right key still works: no lockout
            assert len(await list_all(client)) == 230


@pytest.fixture
async def busy_sim(catalog: Catalog) -> AsyncIterator[Simulator]:
    async with Simulator(catalog, change_rate=50.0, seed=2) as sim:
        yield sim


async def test_living_catalog_lists_without_anomaly(busy_sim: Simulator) -> None:
    async with client_for(busy_sim, auth="none") as client:
        for image_type in ("private", "shared"):
            got = [i["id"] for i in await list_all(client, image_type, page_size=20)]
            assert len(got) == len(set(got))
