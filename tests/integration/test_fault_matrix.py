"""The fault matrix of docs/reliability.md, row by row, for faults of the IMS API: each fault
strikes a full sweep that follows changes to the catalog (a rename, a status change, a
deletion, a creation), and every row asserts the same four things —

* nothing committed is lost (every event of before is still there, every live row still live
  unless the catalog deleted it);
* no false tombstone (with ``delete_after_missed_sweeps = 1`` and no ``min_sweep_ratio``, the
  harshest setting: an image the faulted sweep failed to see would be tombstoned at once);
* no missing or doubled event: after recovery each change has exactly one event, and the event
  log replays to the state (syncer.store.verify);
* the next cycle recovers: a sweep without the fault completes and the database equals the
  catalog.

Faults come from the simulator (its fault rules and paging alternatives) or, for what a correct
server never sends (an image without an id, a marker that does not advance, ...), from a
scripted server (tests/scripted_ims.py).
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from syncer.config import Settings, settings_from_mapping
from syncer.ims.backoff import Backoff
from syncer.ims.client import ImsClient
from syncer.simulator import Catalog, FaultRule, Simulator
from syncer.store.pool import sync_pool
from syncer.sync.engine import PassResult, run_passes
from syncer.sync.partitions import Partition
from tests.fault_checks import assert_no_harm, assert_recovered, before
from tests.scripted_ims import Answer, ListingHandler, ScriptedIms, Seen, image

REGION, TYPE = "cn-north-4", "private"
PARTITION = Partition(REGION, TYPE)
HARSH = {"delete_after_missed_sweeps": 1, "min_sweep_ratio": 0.0}
FAST = Backoff(base=0.01, cap=0.05, retry_after_cap=0.05)


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    settings = settings_from_mapping({"database": {"dsn": db}, "sync": {"regions": [REGION]}}, {})
    async with sync_pool(settings.database, size=4) as p:
        yield p


def settings_for(endpoint: str, db: str, **api: Any) -> Settings:
    return settings_from_mapping(
        {
            "database": {"dsn": db},
            "api": {"endpoint": endpoint, "auth": "none", "page_size": 10, "max_attempts": 4} | api,
            "sync": {"regions": [REGION], "image_types": [TYPE], "delta_overlap": "0s"} | HARSH,
        },
        {},
        "<test>",
    )


async def sweep(pool: asyncpg.Pool, settings: Settings) -> PassResult:
    async with ImsClient(settings.api, settings.credentials, backoff=FAST) as client:
        [result] = await run_passes(pool, client, [PARTITION], "full", settings)
    return result


# ---- faults of a correct server: the simulator ---------------------------------------------


@dataclass
class SimFault:
    rules: list[FaultRule] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # Simulator(...) alternatives
    api: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None  # of the faulted sweep; None: either
    vanish_markers: bool = False  # delete the image a marker names, before the request


SIM_FAULTS = {
    "429 storm": SimFault([FaultRule("429", with_marker=True, delay=0.01)], outcome="failed"),
    "5xx burst": SimFault(
        [FaultRule("503", times=3), FaultRule("500", with_marker=True, times=2)], outcome="ok"
    ),
    "5xx for good": SimFault([FaultRule("503", with_marker=True)], outcome="failed"),
    "slow answers": SimFault([FaultRule("slow", rate=0.5, delay=0.3)], outcome="ok"),
    "timeouts": SimFault(
        [FaultRule("slow", with_marker=True, delay=1.5)],
        api={"request_timeout": 0.5, "max_attempts": 2},
        outcome="failed",
    ),
    "connection reset mid-body": SimFault(
        [FaultRule("truncated", rate=0.4), FaultRule("drop", rate=0.3)]
    ),
    "invalid JSON": SimFault([FaultRule("malformed", with_marker=True, times=1)], outcome="failed"),
    "a listing cut short": SimFault([FaultRule("cut", with_marker=True)], outcome="ok"),
    "unknown marker (400 IMG.0066)": SimFault(vanish_markers=True, outcome="ok"),
    "unknown marker (an empty page)": SimFault(
        options={"unknown_marker": "empty"}, vanish_markers=True, outcome="ok"
    ),
    "server limit cap": SimFault(options={"max_limit": 4}, outcome="ok"),
    "no page_info": SimFault(options={"page_info": False}, outcome="ok"),
}


@pytest.mark.parametrize("name", list(SIM_FAULTS))
async def test_api_fault_harms_nothing_and_the_next_sweep_recovers(
    pool: asyncpg.Pool, db: str, name: str
) -> None:
    fault = SIM_FAULTS[name]
    catalog = Catalog(regions=[REGION], images_per_partition=40, seed=11, image_types=[TYPE])
    async with Simulator(catalog, **fault.options) as sim:
        settings = settings_for(sim.endpoint_template, db, **fault.api)
        assert (await sweep(pool, settings)).outcome == "ok"
        was = await before(pool)
        images = catalog.images(REGION, TYPE)
        renamed, killed, deleted = images[3]["id"], images[17]["id"], images[25]["id"]
        catalog.update(REGION, renamed, name="renamed")
        catalog.set_status(REGION, killed, "killed")
        catalog.delete(REGION, deleted)
        created = catalog.create(REGION, TYPE, name="new")["id"]
        if fault.vanish_markers:
            sim.before_request = vanish_markers(catalog)
        for rule in fault.rules:
            sim.faults.add(rule)

        faulted = await sweep(pool, settings)
        if fault.outcome is not None:
            assert faulted.outcome == fault.outcome, faulted.error
        if faulted.outcome != "ok":
            assert faulted.error and "\n" not in faulted.error and REGION in faulted.error
        listed = {o["id"] for o in catalog.images(REGION, TYPE)}
        await assert_no_harm(pool, was, listed)

        sim.faults.clear()
        sim.before_request = None
        vanished = set(was.live) - listed - {deleted}  # markers deleted on purpose
        assert not vanished & {renamed, killed}
        expected = {renamed: "updated", killed: "status_changed", deleted: "deleted"}
        expected |= {created: "created"} | {v: "deleted" for v in vanished}
        recovered = await sweep(pool, settings)
        await assert_recovered(pool, recovered, catalog.images(REGION, TYPE), was, expected)
        if fault.rules:
            assert any(rule.fired for rule in fault.rules), "the fault never struck"


def vanish_markers(catalog: Catalog) -> Callable[[list[tuple[str, str]]], None]:
    """Before the first two requests with a marker, delete the image the marker names."""
    done: list[str] = []

    def hook(query: list[tuple[str, str]]) -> None:
        marker = dict(query).get("marker")
        if marker and len(done) < 2 and catalog.get(REGION, marker) is not None:
            done.append(marker)
            catalog.delete(REGION, marker)

    return hook


# ---- what a correct server never sends: a scripted one --------------------------------------


def page_of(handler: ListingHandler, seen: Seen) -> dict[str, Any]:
    doc = handler.page(seen).json
    assert isinstance(doc, dict)
    return doc


def same_page_again(handler: ListingHandler, seen: Seen) -> Answer:
    """The page a request without the marker gets: the marker did not advance anything."""
    first = Seen(seen.method, seen.path, "&".join(
        f"{k}={v}" for k, v in seen.pairs if k != "marker"
    ), seen.headers, seen.body, seen.url)  # fmt: skip
    return Answer(200, page_of(handler, first))


def repeat_an_id(handler: ListingHandler, seen: Seen) -> Answer:
    doc = page_of(handler, seen)
    doc["images"] = [handler.ordered()[0], *doc["images"][1:]]
    return Answer(200, doc)


def without_an_id(handler: ListingHandler, seen: Seen) -> Answer:
    doc = page_of(handler, seen)
    doc["images"][1] = {k: v for k, v in doc["images"][1].items() if k != "id"}
    return Answer(200, doc)


def fifty_megabyte_page(handler: ListingHandler, seen: Seen) -> Answer:
    """Page 2 as it is, padded to 50 MB: over the client's default cap (32 MiB)."""
    doc = page_of(handler, seen)
    doc["images"][0] = {**doc["images"][0], "description": "x" * (50 * 2**20)}
    return Answer(200, doc)


def empty_page(handler: ListingHandler, seen: Seen) -> Answer:
    return Answer(200, {"images": [], "page_info": {}})


@dataclass
class PageFault:
    answer: Callable[[ListingHandler, Seen], Answer] | None = None  # replaces page 2, once
    change: Callable[[dict[str, Any]], None] | None = None  # done to one image of the catalog
    outcome: str = "failed"
    kind: str = "updated"  # the event of ``change``


def wrong_types(obj: dict[str, Any]) -> None:
    obj.update(min_ram="lots", tags="a,b", protected="yes", active_at=[1], size={}, status=5)


def ten_megabyte_name(obj: dict[str, Any]) -> None:
    obj["name"] = "名" * (10 * 2**20 // 3)  # 10 MB of UTF-8


PAGE_FAULTS = {
    "an image without id": PageFault(without_an_id),
    "an image with wrong types": PageFault(
        change=wrong_types,
        outcome="ok",
        kind="status_changed",  # its status 5 is no status
    ),
    "an image with a 10 MB name": PageFault(change=ten_megabyte_name, outcome="ok"),
    "a 50 MB page": PageFault(fifty_megabyte_page),
    "the same id on two pages": PageFault(repeat_an_id),
    "a marker that does not advance": PageFault(same_page_again),
    "an empty page in the middle of a partition": PageFault(empty_page, outcome="ok"),
}


@pytest.mark.parametrize("name", list(PAGE_FAULTS))
async def test_a_page_no_server_should_send_harms_nothing(
    pool: asyncpg.Pool, db: str, name: str
) -> None:
    fault = PAGE_FAULTS[name]
    handler = ListingHandler([image(n, n // 3) for n in range(40)])
    async with ScriptedIms(handler) as ims:
        settings = settings_for(ims.endpoint, db)
        assert (await sweep(pool, settings)).outcome == "ok"
        was = await before(pool)
        renamed, changed, deleted = handler.images[5], handler.images[15], handler.images[30]
        renamed.update(name="renamed", updated_at="2024-02-01T00:00:00Z")
        handler.delete(deleted["id"])
        new = image(99, 1000)
        handler.images.append(new)
        expected = {renamed["id"]: "updated", deleted["id"]: "deleted", new["id"]: "created"}
        if fault.change is not None:
            fault.change(changed)
            expected[changed["id"]] = fault.kind
        struck: list[int] = []
        if fault.answer is not None:
            answer = fault.answer

            def once(seen: Seen, n: int) -> Answer | None:
                if seen.param("marker") and not struck:
                    struck.append(n)
                    return answer(handler, seen)
                return None

            handler.override = once

        faulted = await sweep(pool, settings)
        assert faulted.outcome == fault.outcome, faulted.error
        if faulted.outcome != "ok":
            assert faulted.error and "\n" not in faulted.error and REGION in faulted.error
            assert "internal error" not in faulted.error, faulted.error
        assert fault.answer is None or struck, "the fault never struck"
        await assert_no_harm(pool, was, {o["id"] for o in handler.images})

        handler.override = None
        recovered = await sweep(pool, settings)
        await assert_recovered(pool, recovered, copy.deepcopy(handler.ordered()), was, expected)
