"""syncer.metrics: what moves when, the client's instrumentation against a real local HTTP
server, and docs/metrics.md kept equal to what the registry really exports."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import syncer.feed.metrics  # noqa: F401 - the daemon's registry holds the feed's metrics too
from syncer import metrics
from syncer.config import ApiSettings, Credentials
from syncer.errors import ApiError
from syncer.ims.client import ImsClient
from syncer.store.passes import PassCounts
from syncer.sync.engine import PassResult
from syncer.sync.partitions import Partition
from tests.scripted_ims import Answer, ScriptedIms, gateway_error, ims_error, queue

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
PAGE = {"images": [{"id": "a", "created_at": "2024-01-01T00:00:00Z"}], "page_info": {}}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def exported_names() -> dict[str, str]:
    """name → type of every syncer_ metric family in the default registry, as exported."""
    names = {}
    for family in REGISTRY.collect():
        if family.name.startswith("syncer_"):
            suffix = "_total" if family.type == "counter" else ""
            names[family.name + suffix] = family.type
    return names


def test_docs_list_exactly_the_exported_metrics() -> None:
    rows = re.findall(r"^\| `(syncer_\w+)` \| (\w+) \|", DOC.read_text(), re.M)
    documented = dict(rows)
    assert len(rows) == len(documented), "a metric is documented twice"
    assert documented == exported_names()


def test_observe_pass_moves_the_partition_metrics() -> None:
    partition = Partition("xx-metric-1", "gold")
    labels = {"region": partition.region, "image_type": "gold"}
    counts = PassCounts(pages=3, images_seen=1200, written=7)
    counts.add_kinds(["created", "created", "status_changed", "deleted"])
    ok = PassResult(partition, "full", "ok", counts, seconds=2.5)
    metrics.observe_pass(ok, now=1_000_000.0)
    assert sample("syncer_passes_total", **labels, mode="full", outcome="ok") == 1
    assert sample("syncer_pages_total", **labels, mode="full") == 3
    assert sample("syncer_images_seen_total", **labels, mode="full") == 1200
    assert sample("syncer_rows_written_total", **labels) == 7
    assert sample("syncer_events_total", **labels, kind="created") == 2
    assert sample("syncer_events_total", **labels, kind="status_changed") == 1
    assert sample("syncer_events_total", **labels, kind="deleted") == 1
    assert sample("syncer_last_full_sweep_timestamp_seconds", **labels) == 1_000_000.0 - 2.5
    assert sample("syncer_last_success_timestamp_seconds", **labels, mode="full") == 999_997.5

    failed = PassResult(partition, "delta", "failed", PassCounts(pages=1), seconds=1.0)
    metrics.observe_pass(failed, now=1_000_100.0)
    assert sample("syncer_last_failure_timestamp_seconds", **labels) == 1_000_100.0
    assert sample("syncer_last_full_sweep_timestamp_seconds", **labels) == 999_997.5
    assert sample("syncer_pages_total", **labels, mode="delta") == 1

    busy = PassResult(partition, "delta", "busy", PassCounts(), seconds=0.0)
    before = sample("syncer_pass_duration_seconds_count", mode="delta")
    metrics.observe_pass(busy)
    assert sample("syncer_passes_total", **labels, mode="delta", outcome="busy") == 1
    assert sample("syncer_pass_duration_seconds_count", mode="delta") == before  # never ran


def test_declared_partitions_export_zeros() -> None:
    metrics.declare_partitions([("xx-metric-2", "market")])
    labels = {"region": "xx-metric-2", "image_type": "market"}
    assert REGISTRY.get_sample_value("syncer_pages_total", {**labels, "mode": "delta"}) == 0.0
    assert REGISTRY.get_sample_value("syncer_events_total", {**labels, "kind": "restored"}) == 0.0
    assert (
        REGISTRY.get_sample_value(
            "syncer_passes_total", {**labels, "mode": "full", "outcome": "failed"}
        )
        == 0.0
    )


def test_daemon_gauges() -> None:
    metrics.set_leases_held(3)
    metrics.set_database_up(False)
    assert sample("syncer_leases_held") == 3 and sample("syncer_database_up") == 0
    metrics.set_database_up(True)
    metrics.set_leases_held(0)
    assert sample("syncer_leases_held") == 0 and sample("syncer_database_up") == 1


@pytest.fixture
async def ims() -> AsyncIterator[ScriptedIms]:
    async with ScriptedIms() as server:
        yield server


async def test_client_counts_requests_retries_throttling_and_latency(ims: ScriptedIms) -> None:
    region = "xx-metric-3"
    throttled = gateway_error(429, "APIGW.0308")
    throttled.headers["Retry-After"] = "0"
    ims.handler = queue(
        throttled,
        ims_error(503, "IMG.0061"),
        Answer(drop=True),
        Answer(drop=True),
        Answer(200, PAGE),
        then=ims_error(400, "IMG.0024"),
    )

    async def no_sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    api = ApiSettings(endpoint=ims.endpoint, auth="none", max_attempts=6, request_timeout=5.0)
    async with ImsClient(api, Credentials(), sleep=no_sleep, rng=random.Random(3)) as c:
        await c.list_images(region, [("limit", "1")], partition=f"{region}/gold")
        with pytest.raises(ApiError):
            await c.list_images(region, [("limit", "1")], partition=f"{region}/gold")
    for status, n in (("429", 1), ("503", 1), ("error", 1), ("200", 1), ("400", 1)):
        assert sample("syncer_ims_requests_total", region=region, status=status) == n, status
    assert sample("syncer_ims_retries_total", region=region, reason="throttled") == 1
    assert sample("syncer_ims_retries_total", region=region, reason="server_error") == 1
    assert sample("syncer_ims_retries_total", region=region, reason="connection") == 1
    assert sample("syncer_ims_throttled_total", region=region) == 1
    # latency of every answered request; the dropped connection (aiohttp re-sent it once
    # by itself, below the client) has no answer, hence no latency
    assert sample("syncer_ims_request_duration_seconds_count", region=region) == 4
