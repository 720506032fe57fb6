"""A wrong SK against the simulator's gateway, through the sync engine, cycle after cycle:
one rejected request per cycle at most, every partition failed with the reason, no lockout."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY

from syncer.config import Settings, settings_from_mapping
from syncer.ims.client import ImsClient
from syncer.simulator import Catalog, Simulator
from syncer.store.pool import open_pool
from syncer.sync.engine import PassResult, run_passes
from syncer.sync.partitions import plan_partitions

REGIONS = ("cn-north-4", "ap-southeast-1", "af-south-1")
AK = "AKSIMGATE0123456789"
SK = "SKSIMGATE-the-right-one"
WRONG_SK = "SKSIMGATE-a-wrong-one"


MOVED = (
    ("syncer_passes_total", None),
    ("syncer_images_seen_total", None),
    ("syncer_rows_written_total", None),
    ("syncer_events_total", "created"),
    ("syncer_pages_total", None),
)


def total(name: str, kind: str | None) -> float:
    """The sum of a counter over this test's regions (and one event kind)."""
    return sum(
        s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == name
        and s.labels.get("region") in REGIONS
        and (kind is None or s.labels.get("kind") == kind)
    )


def make_settings(sim: Simulator, dsn: str, sk: str) -> Settings:
    return settings_from_mapping(
        {
            "database": {"dsn": dsn},
            "api": {
                "endpoint": sim.endpoint_template,
                "auth": "aksk",
                "page_size": 50,
                "auth_holdback": "300ms",
            },
            "sync": {"regions": list(REGIONS), "partition_concurrency": 4},
        },
        {
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": sk,
            "HUAWEICLOUD_SDK_PROJECT_ID": sim.catalog.tenant_project_id,
        },
        "<test>",
    )


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    catalog = Catalog(regions=REGIONS, images_per_partition=30, seed=5)
    async with Simulator(catalog, auth="aksk", ak=AK, sk=SK) as simulator:
        yield simulator


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await open_pool(db, size=6)
    try:
        yield p
    finally:
        await p.close()


async def test_wrong_sk_one_rejected_request_per_cycle_then_recovery(
    sim: Simulator, pool: asyncpg.Pool, db: str
) -> None:
    settings = make_settings(sim, db, WRONG_SK)
    partitions = plan_partitions(settings)
    assert len(partitions) == 12

    async def cycle(client: ImsClient) -> list[PassResult]:
        return await run_passes(pool, client, partitions, "full", settings)

    async with ImsClient(settings.api, settings.credentials) as client:
        # the hold-back's clock, moved by the test: a loaded machine cannot outrun it
        now = [1000.0]
        client._credential_gate.clock = lambda: now[0]
        results = await cycle(client)  # the first cycle: ONE rejected request
        assert [r.status for r in sim.requests] == [401]
        assert all(r.outcome == "failed" for r in results)
        errors = {r.error.split(": ", 1)[1] for r in results if r.error}
        assert len(errors) == 1, errors  # the same reason for every partition
        assert next(iter(errors)).startswith("AK/SK rejected: Incorrect IAM authentication")
        problem = client.credential_problem()
        assert problem is not None and "held back for 0.3s until" in problem

        await cycle(client)  # within the hold-back: nothing is sent
        assert len(sim.requests) == 1

        now[0] += 0.35
        results = await cycle(client)  # after it: one probe, rejected, the hold-back doubles
        assert [r.status for r in sim.requests] == [401, 401]
        assert all(r.outcome == "failed" for r in results)
        hold = client.credential_hold(REGIONS[0])
        assert hold is not None and hold.holdback == pytest.approx(0.6)

        sim.gate.sk = WRONG_SK  # the gateway now takes the key the client has
        now[0] += 0.65
        before = {name: total(name, kind) for name, kind in MOVED}
        results = await cycle(client)  # the probe succeeds; every partition completes
        assert all(r.outcome == "ok" for r in results), [r.error for r in results]
        assert client.credential_problem() is None
        moved = {name: total(name, kind) - before[name] for name, kind in MOVED}
        assert moved == {
            "syncer_passes_total": 12,
            "syncer_images_seen_total": 12 * 30,
            "syncer_rows_written_total": 12 * 30,
            "syncer_events_total": 12 * 30,
            "syncer_pages_total": 12,
        }
    assert sim.statuses[401] == 2  # never near the gateway's lockout (more than 5 in a row)
    rows = await pool.fetch(
        "SELECT outcome, error FROM ims.sync_runs WHERE outcome = 'failed' ORDER BY id"
    )
    assert len(rows) == 3 * 12
    assert all("AK/SK rejected" in r["error"] and SK not in r["error"] for r in rows)
