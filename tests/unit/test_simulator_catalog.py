"""The simulated catalog: realistic, deterministic content and changes that keep indexes right."""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

import pytest
from huaweicloudsdkims.v2.model.image_info import ImageInfo

from syncer.simulator import REMOVED, Catalog
from syncer.simulator.generate import (
    DEFAULT_TENANT_PROJECT_ID,
    MARKET_VENDOR_IDS,
    PLATFORM_PROJECT_ID,
    SHARING_PROJECT_IDS,
)
from syncer.simulator.listing import list_page
from syncer.simulator.query import parse_query

REGION = "cn-north-4"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# the fields Huawei's spec marks "always sent"
ALWAYS = {
    "__image_size", "__image_source_type", "__imagetype", "__isregistered", "__os_type",
    "container_format", "created_at", "id", "min_disk", "min_ram", "name", "owner", "protected",
    "self", "status", "tags", "updated_at", "virtual_env_type", "visibility",
}  # fmt: skip


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog(regions=[REGION, "ap-southeast-1"], images_per_partition=400, seed=11)


def ids(images: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in images]


def listing(cat: Catalog, region: str, **params: str) -> list[dict[str, Any]]:
    """Page through list_page with a marker until the end (checks page_info rules on the way)."""
    out: list[dict[str, Any]] = []
    marker = None
    limit = int(params.pop("limit", "50"))
    for _ in range(10_000):
        pairs = [*params.items(), ("limit", str(limit))]
        if marker:
            pairs.append(("marker", marker))
        page = list_page(cat, region, parse_query(pairs))
        out += page.images
        assert (page.next_marker is not None) == (len(page.images) == limit)
        if page.next_marker is None:
            return out
        assert page.next_marker == page.images[-1]["id"]
        marker = page.next_marker
    raise AssertionError("listing did not end")


def test_same_seed_same_catalog_and_different_seed_differs() -> None:
    a = Catalog(regions=[REGION], images_per_partition=50, seed=5)
    b = Catalog(regions=[REGION], images_per_partition=50, seed=5)
    c = Catalog(regions=[REGION], images_per_partition=50, seed=6)
    for t in ("gold", "private", "shared", "market"):
        assert a.images(REGION, t) == b.images(REGION, t)
        assert ids(a.images(REGION, t)) != ids(c.images(REGION, t))


def test_regions_and_types_are_distinct_partitions(catalog: Catalog) -> None:
    seen: set[str] = set()
    for region in catalog.regions:
        for t in catalog.image_types:
            images = catalog.images(region, t)
            assert len(images) == 400
            assert {i["__imagetype"] for i in images} == {t}
            assert not seen & set(ids(images))
            seen |= set(ids(images))


def test_objects_look_like_ims(catalog: Catalog) -> None:
    for t in catalog.image_types:
        for image in catalog.images(REGION, t):
            assert image.keys() >= ALWAYS, ALWAYS - image.keys()
            assert UUID_RE.match(image["id"])
            assert TIME_RE.match(image["created_at"]) and TIME_RE.match(image["updated_at"])
            assert image["created_at"] <= image["updated_at"]
            assert image["self"] == f"/v2/images/{image['id']}"
            assert image["__image_size"].isdigit()
            assert isinstance(image["protected"], bool)
            assert isinstance(image["min_disk"], int) and isinstance(image["min_ram"], int)
            assert isinstance(image["tags"], list)
            assert image["status"] in ("queued", "saving", "active", "killed")
            if image["status"] == "active":
                assert TIME_RE.match(image["active_at"])
            assert not ("__support_kvm_gpu_type" in image and "__support_kvm" in image)


def test_type_specific_domains(catalog: Catalog) -> None:
    gold = catalog.images(REGION, "gold")
    assert {(i["owner"], i["visibility"], i["protected"], i["status"]) for i in gold} == {
        (PLATFORM_PROJECT_ID, "public", True, "active")
    }
    private = catalog.images(REGION, "private")
    assert {(i["owner"], i["visibility"], i["protected"]) for i in private} == {
        (DEFAULT_TENANT_PROJECT_ID, "private", False)
    }
    assert {"queued", "saving", "active", "killed"} >= {i["status"] for i in private}
    assert any(i["tags"] for i in private)
    shared = catalog.images(REGION, "shared")
    assert {i["visibility"] for i in shared} == {"shared"}
    assert {i["owner"] for i in shared} <= {DEFAULT_TENANT_PROJECT_ID, *SHARING_PROJECT_IDS}
    statuses = Counter(catalog.member_status(REGION, i["id"]) for i in shared)
    assert statuses.keys() == {None, "accepted", "pending", "rejected"}
    for i in shared:
        assert (catalog.member_status(REGION, i["id"]) is None) == (
            i["owner"] == DEFAULT_TENANT_PROJECT_ID
        )
    market = catalog.images(REGION, "market")
    assert {i["owner"] for i in market} <= set(MARKET_VENDOR_IDS)
    assert all(re.match(r"^00301-\d{6}-0--0$", i["__productcode"]) for i in market)


def test_realism_ties_unicode_and_unknown_fields(catalog: Catalog) -> None:
    images = [i for t in catalog.image_types for i in catalog.images(REGION, t)]
    per_second = Counter((i["__imagetype"], i["created_at"]) for i in images)
    assert max(per_second.values()) >= 3  # many images share one creation second
    assert any(not i["name"].isascii() for i in images)
    known = set(ImageInfo.attribute_map.values())  # the 63 keys of the SDK's model
    assert len(known) == 63
    seen = {k for i in images for k in i}
    assert known <= seen, known - seen  # every documented field occurs somewhere
    unknown = Counter(k for i in images for k in i.keys() - known)
    assert "architecture" in unknown  # seen in Huawei's docs, not in the SDK's model
    assert len(unknown) >= 3


def test_changes_move_updated_at_and_keep_the_listing_right() -> None:
    clock = Clock(1_800_000_000)
    cat = Catalog(regions=[REGION], images_per_partition=60, seed=2, clock=clock)
    before = cat.images(REGION, "private")

    new = cat.create(REGION, "private", name="上传中", __description="x")
    assert (new["status"], new["created_at"], new["updated_at"]) == (
        "queued", "2027-01-15T08:00:00Z", "2027-01-15T08:00:00Z"
    )  # fmt: skip
    assert "active_at" not in new and new["name"] == "上传中" and new["__description"] == "x"
    assert cat.get(REGION, new["id"]) == new

    clock.t += 5
    saving = cat.set_status(REGION, new["id"], "saving")
    assert saving["status"] == "saving" and saving["updated_at"] == "2027-01-15T08:00:05Z"
    clock.t += 5
    active = cat.set_status(REGION, new["id"], "active")
    assert active["active_at"] == active["updated_at"] == "2027-01-15T08:00:10Z"
    assert active["created_at"] == new["created_at"]

    victim = before[10]
    clock.t += 1
    changed = cat.update(
        REGION, victim["id"], name="renamed", __future_field={"a": [1]}, __description=REMOVED
    )
    assert changed["name"] == "renamed" and changed["__future_field"] == {"a": [1]}
    assert "__description" not in changed
    assert changed["updated_at"] == "2027-01-15T08:00:11Z"
    assert {
        k: v for k, v in changed.items() if k not in ("name", "updated_at", "__future_field")
    } == {k: v for k, v in victim.items() if k not in ("name", "updated_at", "__description")}
    with pytest.raises(ValueError):
        cat.update(REGION, victim["id"], created_at="2020-01-01T00:00:00Z")

    cat.delete(REGION, before[0]["id"])
    assert cat.get(REGION, before[0]["id"]) is None
    with pytest.raises(KeyError):
        cat.update(REGION, before[0]["id"], name="gone")

    now = cat.images(REGION, "private")
    assert len(now) == len(before)  # one created, one deleted
    for sort_key in ("name", "status", "created_at", "id", "size", "disk_format"):
        for sort_dir in ("asc", "desc"):
            got = listing(cat, REGION, __imagetype="private", sort_key=sort_key, sort_dir=sort_dir)
            assert got == sorted_reference(now, sort_key, sort_dir == "desc")


def sort_value(v: Any) -> tuple[int, Any]:
    if v is None:
        return (0, 0)
    if isinstance(v, bool | int | float):
        return (1, v)
    return (2, v)


def sorted_reference(
    images: list[dict[str, Any]], sort_key: str, desc: bool
) -> list[dict[str, Any]]:
    return sorted(
        images,
        key=lambda i: (sort_value(i.get(sort_key)), i["created_at"], i["id"]),
        reverse=desc,
    )


def test_created_images_share_a_second_and_order_by_id() -> None:
    clock = Clock(1_800_000_000)
    cat = Catalog(regions=[REGION], images_per_partition=0, seed=2, clock=clock)
    made = [cat.create(REGION, "gold") for _ in range(20)]
    got = listing(cat, REGION, __imagetype="gold", sort_dir="asc", limit="7")
    assert ids(got) == sorted(ids(made))
    got = listing(cat, REGION, __imagetype="gold", limit="7")
    assert ids(got) == sorted(ids(made), reverse=True)


def test_deleted_images_can_stay_visible_for_a_while() -> None:
    clock = Clock(1_800_000_000)
    cat = Catalog(
        regions=[REGION], images_per_partition=5, seed=3, clock=clock, deleted_visible_seconds=60
    )
    target = cat.images(REGION, "private")[2]
    clock.t += 1
    cat.delete(REGION, target["id"])
    shown = cat.get(REGION, target["id"])
    assert shown is not None and shown["status"] == "deleted" and shown["deleted"] is True
    assert shown["updated_at"] == shown["deleted_at"] == "2027-01-15T08:00:01Z"
    assert target["id"] in ids(cat.images(REGION, "private"))
    clock.t += 61
    assert cat.get(REGION, target["id"]) is None
    assert target["id"] not in ids(cat.images(REGION, "private"))


def test_life_creates_transitions_updates_and_deletes() -> None:
    clock = Clock(1_800_000_000)
    cat = Catalog(regions=[REGION], images_per_partition=200, seed=4, clock=clock)
    before = {t: {i["id"]: i for i in cat.images(REGION, t)} for t in cat.image_types}
    rng = random.Random(1)
    for _ in range(40):
        clock.t += 1
        cat.step(3.0, rng)
    assert cat.changes > 200
    created = deleted = changed = 0
    statuses: Counter[str] = Counter()
    for t in cat.image_types:
        after = {i["id"]: i for i in cat.images(REGION, t)}
        created += len(after.keys() - before[t].keys())
        deleted += len(before[t].keys() - after.keys())
        for image_id in after.keys() & before[t].keys():
            if after[image_id] != before[t][image_id]:
                changed += 1
                assert after[image_id]["updated_at"] > before[t][image_id]["updated_at"]
        statuses.update(i["status"] for i in after.values() if i["id"] not in before[t])
        if t == "gold":
            assert before[t].keys() <= after.keys()  # protected images are never deleted
    assert created and deleted and changed
    assert {"queued", "saving", "active"} <= statuses.keys()
    # the indexes stayed right through all of it
    for t in cat.image_types:
        now = cat.images(REGION, t)
        for sort_key in ("created_at", "name", "status"):
            got = listing(cat, REGION, __imagetype=t, sort_key=sort_key, limit="37")
            assert got == sorted_reference(now, sort_key, desc=True)


def test_mutate_makes_exactly_n_changes_of_every_kind_over_every_partition() -> None:
    clock = Clock(1_800_000_000)
    cat = Catalog(regions=[REGION, "r2"], images_per_partition=100, seed=5, clock=clock)
    before = {key: {i["id"]: i for i in cat.images(*key)} for key in cat.partitions}
    clock.t += 1
    made = cat.mutate(80, random.Random(2))
    assert sum(made.values()) == 80 == cat.changes
    assert {"created", "updated", "deleted", "transition"} <= made.keys()
    for key in cat.partitions:  # spread evenly: 80 changes over 8 partitions
        after = {i["id"]: i for i in cat.images(*key)}
        touched = {i for i in after if after[i] != before[key].get(i)}
        touched |= before[key].keys() - after.keys()
        assert 1 <= len(touched) <= 10
        assert all(after[i]["updated_at"] == "2027-01-15T08:00:01Z" for i in touched if i in after)
    # the same seed, the same changes
    twin = Catalog(regions=[REGION, "r2"], images_per_partition=100, seed=5, clock=clock)
    assert twin.mutate(80, random.Random(2)) == made
    assert all(twin.images(*key) == cat.images(*key) for key in cat.partitions)


def test_served_bytes_follow_every_change_and_the_cache_stays_bounded() -> None:
    import orjson

    cat = Catalog(regions=["r"], images_per_partition=50, seed=4, image_types=["private"])
    cat.render_cache.limit = 20
    q = parse_query([("__imagetype", "private"), ("limit", "1000")])

    def served() -> dict[str, dict[str, Any]]:
        return {o["id"]: o for o in orjson.loads(list_page(cat, "r", q).images_json())}

    def truth() -> dict[str, dict[str, Any]]:
        return {o["id"]: o for o in cat.images("r", "private")}

    assert served() == truth()  # the same objects, rendered or cached
    assert len(cat.render_cache.entries) <= 20
    cat.render_cache.limit = 1000  # room for all: a stale entry would now be served
    served()
    assert len(cat.render_cache.entries) == 50
    first = cat.images("r", "private")[0]["id"]
    cat.update("r", first, name="changed")
    cat.set_status("r", cat.images("r", "private")[1]["id"], "killed")
    assert served() == truth()
    assert served()[first]["name"] == "changed"
    assert orjson.loads(cat.render_cache.entries[first])["name"] == "changed"
