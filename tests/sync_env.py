"""The sync engine against the simulator: an `Env` with a living catalog, a pool and a way to
run passes as the CLI and the daemon do, and the check that the database equals the catalog."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson

from syncer.config import Settings, settings_from_mapping
from syncer.ims.backoff import Backoff
from syncer.ims.client import ImsClient
from syncer.simulator import Catalog, Simulator
from syncer.store.pool import sync_pool
from syncer.sync.engine import PassResult, Progress, run_passes
from syncer.sync.partitions import Partition, plan_partitions

REGIONS = ("cn-north-4", "ap-southeast-1")


def make_settings(
    sim: Simulator,
    dsn: str,
    api: dict[str, Any] | None = None,
    database: dict[str, Any] | None = None,
    **sync: Any,
) -> Settings:
    return settings_from_mapping(
        {
            "database": {"dsn": dsn, **(database or {})},
            "api": {
                "endpoint": sim.endpoint_template,
                "auth": "none",
                "page_size": 50,
                "max_attempts": 8,
                **(api or {}),
            },
            "sync": {"regions": list(REGIONS), "delta_overlap": "0s", **sync},
        },
        {},
        "<test>",
    )


class Env:
    def __init__(self, sim: Simulator, pool: asyncpg.Pool, dsn: str) -> None:
        self.sim, self.pool, self.dsn = sim, pool, dsn

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, sim: Simulator, dsn: str, database: dict[str, Any] | None = None
    ) -> AsyncIterator[Env]:
        """With the pool the CLI and the daemon use (session timeouts and all)."""
        settings = make_settings(sim, dsn, database=database)
        async with sync_pool(settings.database, size=6) as pool:
            yield cls(sim, pool, dsn)

    async def sync(
        self,
        mode: str = "full",
        partitions: list[Partition] | None = None,
        api: dict[str, Any] | None = None,
        progress: Progress | None = None,
        **sync: Any,
    ) -> list[PassResult]:
        settings = make_settings(self.sim, self.dsn, api, **sync)
        # Real sleeps, short ones: retries are exercised without making the suite slow.
        fast = Backoff(base=0.01, cap=0.05, retry_after_cap=0.05)
        async with ImsClient(settings.api, settings.credentials, backoff=fast) as client:
            return await run_passes(
                self.pool,
                client,
                partitions or plan_partitions(settings),
                mode,  # type: ignore[arg-type]
                settings,
                progress=progress,
            )

    async def events(self, after: int = 0) -> list[tuple[str, str, str | None, str | None]]:
        """The events after seq ``after`` (see ``head``), in order."""
        rows = await self.pool.fetch(
            "SELECT image_id, kind, old_status, new_status FROM ims.image_events"
            " WHERE seq > $1 ORDER BY seq",
            after,
        )
        return [(r["image_id"], r["kind"], r["old_status"], r["new_status"]) for r in rows]

    async def head(self) -> int:
        """The newest event's seq."""
        return int(await self.pool.fetchval("SELECT coalesce(max(seq), 0) FROM ims.image_events"))


async def assert_db_equals_catalog(env: Env, partitions: list[Partition] | None = None) -> None:
    """The live rows of each partition (default: every one of REGIONS × the four types) are
    exactly the catalog's images, ``raw`` equal to the object served."""
    everywhere = [Partition(r, t) for r in REGIONS for t in ("gold", "private", "shared", "market")]
    for region, t in partitions or everywhere:
        expected = {o["id"]: o for o in env.sim.catalog.images(region, t)}
        rows = await env.pool.fetch(
            "SELECT image_id, raw, status, name, created_at, updated_at FROM ims.current_images "
            "WHERE region = $1 AND image_type = $2",
            region,
            t,
        )
        got = {r["image_id"]: orjson.loads(r["raw"]) for r in rows}
        assert got == expected, f"{region}/{t}"
        for r in rows:
            obj = expected[r["image_id"]]
            assert (r["status"], r["name"]) == (obj["status"], obj.get("name"))
            assert r["updated_at"].strftime("%Y-%m-%dT%H:%M:%SZ") == obj["updated_at"]


class FrozenClock:
    def __init__(self, catalog: Catalog) -> None:
        self.now = 0.0
        self.catalog = catalog

    def set(self, t: float) -> None:
        self.now = t
        self.catalog.clock = lambda: self.now  # type: ignore[method-assign]


class OffsetClock:
    """The catalog's clock running ``offset`` seconds ahead of the real one."""

    def __init__(self, catalog: Catalog) -> None:
        self.offset = 0.0
        catalog.clock = lambda: time.time() + self.offset  # type: ignore[method-assign]
