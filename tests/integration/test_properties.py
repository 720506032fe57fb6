"""Property-based tests (hypothesis) of the sync against the simulator and a real PostgreSQL.

1. Whatever the catalog, the server's page cap, ``page_info`` or not, an unknown marker as a 400
   or as an empty page, and whatever changes happen between the pages of a pass: a pass that
   completes never tombstones an image that existed throughout it, and after one quiet full
   sweep the database equals the catalog, and the event log replays to the state.
2. The event of two random versions of one image (written one after the other by the page
   writer) names exactly their differences, as ``{"field": [old, new]}``, with the right kind.

Examples: ``SYNCER_HYPOTHESIS_EXAMPLES`` (tests/budget.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncer.config import settings_from_mapping
from syncer.ims.wire import storable_json
from syncer.records import digest_page
from syncer.simulator import Catalog, Simulator
from syncer.simulator.catalog import REMOVED
from syncer.store.passes import partition_pass
from syncer.store.pool import sync_pool
from syncer.store.verify import verify_replay
from syncer.sync.partitions import Partition
from tests.budget import PROPERTY, PROPERTY_EXAMPLES
from tests.strategies import json_values
from tests.sync_env import REGIONS, Env, assert_db_equals_catalog

REGION = REGIONS[0]
TABLES = "ims.image_rows, ims.image_events, ims.sync_runs, ims.partitions, ims.partition_leases"


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    """The sync's own pool (session settings and all), shared by the examples of a test."""
    settings = settings_from_mapping({"database": {"dsn": db}, "sync": {"regions": [REGION]}}, {})
    async with sync_pool(settings.database, size=4) as p:
        yield p


async def empty(pool: asyncpg.Pool) -> None:
    await pool.execute(f"TRUNCATE {TABLES}")


# ---- 1. random catalogs, paging alternatives and changes between pages ---------------------


@dataclass(frozen=True)
class Change:
    at: int  # before the at-th listing request of the pass (1-based)
    kind: str
    pick: int  # which image (modulo the partition's size)
    image_type: str
    value: int


def changes(types: tuple[str, ...]) -> st.SearchStrategy[list[Change]]:
    return st.lists(
        st.builds(
            Change,
            at=st.integers(1, 8),
            kind=st.sampled_from(
                ["create", "rename", "status", "delete", "add_field", "remove_field"]
            ),
            pick=st.integers(0, 10_000),
            image_type=st.sampled_from(types),
            value=st.integers(0, 3),
        ),
        max_size=10,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    types = draw(st.sampled_from([("private",), ("gold", "private")]))
    return {
        "types": types,
        "images": draw(st.integers(0, 25)),
        "seed": draw(st.integers(0, 2**16)),
        "page_size": draw(st.integers(2, 20)),
        "max_limit": draw(st.integers(2, 25)),
        "page_info": draw(st.booleans()),
        "unknown_marker": draw(st.sampled_from(["error", "empty"])),
        "passes": draw(
            st.lists(
                st.tuples(st.sampled_from(["full", "delta"]), changes(types)),
                min_size=1,
                max_size=2,
            )
        ),
    }


class Mutator:
    """Applies the changes of a pass to the catalog before the listing requests they name."""

    def __init__(self, catalog: Catalog, planned: list[Change]) -> None:
        self.catalog, self.planned, self.requests = catalog, planned, 0
        self.deleted: set[str] = set()

    def __call__(self, query: list[tuple[str, str]]) -> None:
        self.requests += 1
        for change in self.planned:
            if change.at == self.requests:
                self.apply(change)

    def apply(self, c: Change) -> None:
        cat = self.catalog
        if c.kind == "create":
            cat.create(REGION, c.image_type, name=f"new {c.pick}")
            return
        images = cat.images(REGION, c.image_type)
        if not images:
            return
        image_id = images[c.pick % len(images)]["id"]
        if c.kind == "rename":
            cat.update(REGION, image_id, name=f"renamed {c.pick}")
        elif c.kind == "status":
            cat.set_status(REGION, image_id, ("queued", "saving", "active", "killed")[c.value])
        elif c.kind == "delete":
            cat.delete(REGION, image_id)
            self.deleted.add(image_id)
        elif c.kind == "add_field":
            cat.update(REGION, image_id, **{f"x_field_{c.value}": [c.pick, {"v": c.value}]})
        else:
            cat.update(
                REGION, image_id, **{("min_disk", "tags", "__os_bit", "name")[c.value]: REMOVED}
            )


async def live_ids(pool: asyncpg.Pool, partitions: list[Partition]) -> set[str]:
    rows = await pool.fetch(
        "SELECT image_id FROM ims.current_images WHERE region = $1 AND image_type = ANY($2)",
        REGION,
        [p.image_type for p in partitions],
    )
    return {r["image_id"] for r in rows}


@PROPERTY
@pytest.mark.timeout(120 + 10 * PROPERTY_EXAMPLES)
@given(scenario=scenarios())
async def test_property_a_quiet_sweep_after_any_changes_equals_the_catalog(
    pool: asyncpg.Pool, db: str, scenario: dict[str, Any]
) -> None:
    await empty(pool)
    catalog = Catalog(
        regions=[REGION],
        images_per_partition=scenario["images"],
        seed=scenario["seed"],
        image_types=scenario["types"],
    )
    partitions = [Partition(REGION, t) for t in scenario["types"]]
    sync = {"delete_after_missed_sweeps": 1, "min_sweep_ratio": 0.0}
    api = {"page_size": scenario["page_size"]}
    async with Simulator(
        catalog,
        max_limit=scenario["max_limit"],
        page_info=scenario["page_info"],
        unknown_marker=scenario["unknown_marker"],
    ) as sim:
        env = Env(sim, pool, db)
        for mode, planned in scenario["passes"]:
            before = {o["id"] for p in partitions for o in catalog.images(REGION, p.image_type)}
            mutator = Mutator(catalog, planned)
            sim.before_request = mutator
            results = await env.sync(mode, partitions, api=api, **sync)
            sim.before_request = None
            assert all(r.outcome == "ok" for r in results), [r.error for r in results]
            if mode == "full":
                # every image there from the start to the end of the pass is still live
                throughout = before - mutator.deleted
                assert throughout <= await live_ids(pool, partitions)
        results = await env.sync("full", partitions, api=api, **sync)  # quiet: no change
        assert all(r.outcome == "ok" for r in results), [r.error for r in results]
        await assert_db_equals_catalog(env, partitions)
    report = await verify_replay(pool)
    assert report.ok, report.lines()


# ---- 2. the event of two random versions of an image ---------------------------------------

FIELDS = ["name", "status", "min_ram", "tags", "protected", "__os_type", "size", "x", "__extra"]
IMAGE_ID = "00000000-0000-4000-8000-000000000001"


@st.composite
def versions(draw: st.DrawFn) -> dict[str, Any]:
    fields = draw(
        st.dictionaries(
            st.sampled_from(FIELDS) | st.text(min_size=1, max_size=8).filter(lambda k: k != "id"),
            json_values(),
            max_size=6,
        )
    )
    status = draw(st.sampled_from(["active", "queued", "killed", "deleted", None, 3]))
    version = {"id": IMAGE_ID, "created_at": "2024-01-01T00:00:00Z", **fields}
    if status is not None:
        version["status"] = status
    elif "status" in version and draw(st.booleans()):
        del version["status"]
    return version


def canonical(value: Any) -> Any:
    """A JSON value as jsonb compares it: numbers by their decimal value (1 = 1.0; a float is
    the number its shortest text names, which is what jsonb stores), booleans apart."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, Fraction):
        return ("number", value)
    if isinstance(value, int):
        return ("number", Fraction(value))
    if isinstance(value, float):
        return ("number", Fraction(repr(value)))
    if isinstance(value, list):
        return ("array", tuple(canonical(v) for v in value))
    return ("object", frozenset((k, canonical(v)) for k, v in value.items()))


def exact(text: str) -> Any:
    """jsonb's text with its numbers exactly (orjson would round big ones to doubles)."""
    return json.loads(text, parse_float=Fraction, parse_int=Fraction)


MISSING = object()


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """{field: [old, new]} for every top-level key whose value differs (absent: null)."""
    out = {}
    for key in a.keys() | b.keys():
        old, new = a.get(key, MISSING), b.get(key, MISSING)
        if old is MISSING or new is MISSING or canonical(old) != canonical(new):
            out[key] = [None if old is MISSING else old, None if new is MISSING else new]
    return out


def status_of(obj: dict[str, Any]) -> str | None:
    value = obj.get("status")
    return value if isinstance(value, str) else None


def expected_kind(a: dict[str, Any], b: dict[str, Any], changed: bool) -> str | None:
    was_gone, gone = status_of(a) == "deleted", status_of(b) == "deleted"
    if was_gone:
        return None if gone else "restored"  # a tombstone listed again: only a restore counts
    if gone:
        return "deleted"
    if status_of(a) != status_of(b):
        return "status_changed"
    return "updated" if changed else None


async def write(pool: asyncpg.Pool, obj: dict[str, Any]) -> None:
    async with partition_pass(pool, REGION, "private", "delta") as p:
        await p.apply_page(digest_page([obj]))
        await p.complete_delta(covered_from=p.started_at)


@PROPERTY
@pytest.mark.timeout(120 + 2 * PROPERTY_EXAMPLES)
@given(a=versions(), b=versions())
async def test_property_the_event_of_two_versions_is_exactly_their_differences(
    pool: asyncpg.Pool, a: dict[str, Any], b: dict[str, Any]
) -> None:
    await empty(pool)
    await write(pool, a)
    await write(pool, b)
    stored_a, stored_b = storable_json(a), storable_json(b)  # what PostgreSQL can hold
    diff = differences(stored_a, stored_b)
    events = await pool.fetch(
        "SELECT kind, old_status, new_status, changes FROM ims.image_events ORDER BY seq"
    )
    first_kind = "deleted" if status_of(a) == "deleted" else "created"
    assert [e["kind"] for e in events[:1]] == [first_kind]
    later = events[1:]
    kind = expected_kind(stored_a, stored_b, bool(diff))
    assert [e["kind"] for e in later] == ([kind] if kind else []), (diff, later)
    if later:
        event = later[0]
        changes = exact(event["changes"])
        assert canonical(changes) == canonical(diff)
        assert (event["old_status"], event["new_status"]) == (
            "deleted" if status_of(a) == "deleted" else status_of(a),
            status_of(b),
        )
    raw = exact(await pool.fetchval("SELECT raw FROM ims.image_rows"))
    assert canonical(raw) == canonical(stored_b)
    report = await verify_replay(pool)
    assert report.ok, report.lines()
