"""Huawei's official SDK (huaweicloudsdkims) against the running simulator.

The SDK is synchronous (requests), so the simulator serves from a background thread here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkims.v2 import ImsClient, ListImagesRequest, ListImagesResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncer.simulator import Catalog, FaultRule, Simulator
from tests.unit import test_simulator_query as q

AK, SK = "AKSDK00000000000000001", "sdk-secret-key"
PROJECT = "0605767e5f0025bd2f81c00c2e9c0d30"
REGION = "cn-north-4"

# wire name → ListImagesRequest keyword
SDK_NAMES = {
    "__imagetype": "imagetype", "__isregistered": "isregistered", "__os_bit": "os_bit",
    "__os_type": "os_type", "__platform": "platform",
    "__support_diskintensive": "support_diskintensive",
    "__support_highperformance": "support_highperformance", "__support_kvm": "support_kvm",
    "__support_kvm_gpu_type": "support_kvm_gpu_type",
    "__support_kvm_infiniband": "support_kvm_infiniband",
    "__support_largememory": "support_largememory", "__support_xen": "support_xen",
    "__support_xen_gpu_type": "support_xen_gpu_type", "__support_xen_hana": "support_xen_hana",
}  # fmt: skip
SDK_UNSUPPORTED = {"__whole_image", "__system__cmkid"}  # not in the SDK's request model


def client(base_url: str, sk: str = SK) -> Any:
    config = HttpConfig.get_default_config()
    config.timeout = (5, 30)
    return (
        ImsClient.new_builder()
        .with_credentials(BasicCredentials(AK, sk, PROJECT))
        .with_http_config(config)
        .with_endpoint(base_url)
        .build()
    )


def request(pairs: list[tuple[str, str]]) -> ListImagesRequest:
    kwargs: dict[str, Any] = {}
    for key, value in pairs:
        name = SDK_NAMES.get(key, key)
        if key in ("limit", "min_ram", "min_disk"):
            kwargs[name] = int(value)
        elif key == "protected":
            kwargs[name] = value.lower() == "true"
        else:
            kwargs[name] = value
    return ListImagesRequest(**kwargs)


def scan(ims: Any, pairs: list[tuple[str, str]], limit: int) -> list[dict[str, Any]]:
    """Every page via the SDK, following page_info.next_marker."""
    out: list[dict[str, Any]] = []
    marker = None
    for _ in range(10_000):
        page_pairs = [*pairs, ("limit", str(limit))] + ([("marker", marker)] if marker else [])
        response = ims.list_images(request(page_pairs))
        assert isinstance(response, ListImagesResponse)
        out += [i.to_dict() for i in response.images]
        marker = response.page_info.next_marker if response.page_info else None
        if not marker:
            return out
    raise AssertionError("the listing did not end")


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(q.CATALOG, auth="aksk", ak=AK, sk=SK).serve_in_thread() as s:
        yield s


def test_signed_requests_are_accepted_and_parse_into_the_sdk_model(sim: Simulator) -> None:
    response = client(sim.base_url).list_images(
        ListImagesRequest(imagetype="private", limit=3, sort_key="name", sort_dir="asc")
    )
    assert isinstance(response, ListImagesResponse)
    expected = q.reference([("__imagetype", "private"), ("sort_key", "name"), ("sort_dir", "asc")])
    assert [i.id for i in response.images] == expected[:3]
    assert response.page_info.next_marker == expected[2]
    first = response.images[0]
    raw = sim.catalog.get(REGION, first.id)
    assert raw is not None
    assert (first.name, first.status, first.owner, first.created_at, first.protected) == (
        raw["name"], raw["status"], raw["owner"], raw["created_at"], raw["protected"]
    )  # fmt: skip
    assert first.image_size == raw["__image_size"] and first.imagetype == "private"
    assert sim.requests[-1].status == 200


def test_a_wrong_sk_is_a_401(sim: Simulator) -> None:
    with pytest.raises(ClientRequestException) as e:
        client(sim.base_url, sk="not-the-sk").list_images(ListImagesRequest(limit=1))
    assert e.value.status_code == 401
    assert e.value.error_code == "APIGW.0301"
    assert e.value.request_id  # from X-Request-Id


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"sort_key": "owner"}, "IMG.0017"),
        ({"sort_dir": "sideways"}, "IMG.0017"),
        ({"limit": -1}, "IMG.0017"),
        ({"created_at": "after:2020-01-01T00:00:00Z"}, "IMG.0017"),
        ({"updated_at": "gte:2020-02-30T00:00:00Z"}, "IMG.0017"),
        ({"imagetype": "platinum"}, "IMG.0024"),
        ({"marker": "3f1b2c4d-0000-4000-8000-000000000000"}, "IMG.0066"),
    ],
)
def test_400_bodies_parse_into_the_sdk_error(
    sim: Simulator, kwargs: dict[str, Any], code: str
) -> None:
    with pytest.raises(ClientRequestException) as e:
        client(sim.base_url).list_images(ListImagesRequest(**kwargs))
    assert (e.value.status_code, e.value.error_code) == (400, code)
    assert e.value.error_msg


def sdk_pairs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The SDK sends each parameter at most once and only those in its model."""
    seen: set[str] = set()
    out = []
    for key, value in pairs:
        if key not in seen and key not in SDK_UNSUPPORTED:
            seen.add(key)
            out.append((key, value))
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(q.queries(), st.integers(3, 80))
def test_filters_and_sorting_equal_direct_computation(
    sim: Simulator, pairs: list[tuple[str, str]], limit: int
) -> None:
    pairs = sdk_pairs(pairs)
    got = [i["id"] for i in scan(client(sim.base_url), pairs, limit)]
    assert got == q.reference(pairs)


@pytest.mark.parametrize("sort_dir", ["asc", "desc"])
def test_paging_while_the_catalog_changes_returns_each_image_once(sort_dir: str) -> None:
    catalog = Catalog(regions=[REGION], images_per_partition=300, seed=8)
    initial = {i["id"] for i in catalog.images(REGION, "private")}
    created: set[str] = set()
    deleted: set[str] = set()
    rng = random.Random(sort_dir)

    def churn(pairs: list[tuple[str, str]]) -> None:
        marker = dict(pairs).get("marker")
        if not marker:
            return
        for _ in range(3):
            created.add(catalog.create(REGION, "private")["id"])
        live = sorted(i["id"] for i in catalog.images(REGION, "private"))
        for image_id in rng.sample(live, 6):
            catalog.update(REGION, image_id, name=f"renamed-{rng.randrange(1000)}")
        for image_id in rng.sample(live, 3):
            if image_id != marker:
                catalog.delete(REGION, image_id)
                deleted.add(image_id)
        for image_id in rng.sample(live, 2):
            if image_id != marker and image_id not in deleted:
                catalog.set_status(REGION, image_id, rng.choice(("saving", "active", "killed")))

    with Simulator(catalog, auth="aksk", ak=AK, sk=SK).serve_in_thread() as sim:
        sim.before_request = churn
        pairs = [("__imagetype", "private"), ("sort_key", "created_at"), ("sort_dir", sort_dir)]
        got = [i["id"] for i in scan(client(sim.base_url), pairs, 25)]
    assert len(got) == len(set(got)), "an image was returned twice"
    assert initial - deleted <= set(got)
    assert set(got) <= initial | created
    assert deleted and created


def test_paging_while_the_catalog_lives_with_deleted_images_visible() -> None:
    catalog = Catalog(
        regions=[REGION], images_per_partition=400, seed=9, deleted_visible_seconds=3600
    )
    initial = {i["id"] for i in catalog.images(REGION, "shared")}
    slow_pages = [FaultRule("slow", delay=0.06, with_marker=True)]  # so that life goes on meanwhile
    with Simulator(catalog, change_rate=300.0, faults=slow_pages).serve_in_thread() as sim:
        pairs = [("__imagetype", "shared"), ("sort_dir", "asc")]
        got = scan(client(sim.base_url), pairs, 20)
    ids = [i["id"] for i in got]
    assert len(ids) == len(set(ids))
    assert initial <= set(ids)
    assert catalog.changes > 100
    assert any(i["status"] == "deleted" for i in got) or catalog.count(REGION, "shared") > 400
