"""`syncer demo`: the whole pipeline on this machine with no set-up.

A private embedded PostgreSQL (temporary), the IMS simulator, one full sync, scripted changes
(an upload, a rename, a killed image, a deletion), a delta sync that picks them up, full sweeps
until the deletion is tombstoned, and the events a feed consumer would receive.
"""

from __future__ import annotations

import random
import time

import asyncpg
from rich.console import Console
from rich.table import Table

from syncer.config import settings_from_mapping
from syncer.ims.client import ImsClient
from syncer.progress import summary
from syncer.simulator import Simulator
from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate
from syncer.store.pool import pool_session
from syncer.sync.engine import run_passes
from syncer.sync.partitions import plan_partitions

REGIONS = ("cn-north-4", "ap-southeast-1")


async def run_demo(console: Console, *, images_per_partition: int = 2000) -> None:
    console.rule("syncer demo")
    with EmbeddedPostgres(durable=False) as pg:
        console.print(
            f"private PostgreSQL on port {pg.port} "
            f"({pg.binaries.source} binaries: {pg.binaries.bin_dir})"
        )
        await migrate(pg.dsn)
        async with Simulator(
            regions=REGIONS, images_per_partition=images_per_partition, seed=7
        ) as sim:
            console.print(
                f"IMS simulator on {sim.endpoint_template} "
                f"({len(REGIONS)} regions × 4 image types × {images_per_partition:,} images)"
            )
            settings = settings_from_mapping(
                {
                    "database": {"dsn": pg.dsn},
                    "api": {"endpoint": sim.endpoint_template, "auth": "none", "page_size": 500},
                    "sync": {"regions": list(REGIONS), "delta_overlap": "2s"},
                },
                {},
                "<demo>",
            )
            partitions = plan_partitions(settings)
            async with (
                pool_session(pg.dsn, size=6) as pool,
                ImsClient(settings.api, settings.credentials) as client,
            ):
                began = time.monotonic()
                results = await run_passes(pool, client, partitions, "full", settings)
                console.print(summary(results, "first full"))
                total = sum(r.counts.images_seen for r in results)
                console.print(f"{total:,} images in {time.monotonic() - began:.1f}s")

                first_runs = await pool.fetchval("SELECT max(id) FROM ims.sync_runs")

                console.print(
                    "\nthe catalog lives: per region one upload (queued → saving), one rename,"
                    " one image killed, one deleted …"
                )
                rng = random.Random(7)
                for region in REGIONS:
                    cat = sim.catalog
                    new = cat.create(region, "private", name="demo-upload 演示")
                    cat.set_status(region, new["id"], "saving")
                    victims = rng.sample(cat.images(region, "private"), 3)
                    cat.update(region, victims[0]["id"], name="renamed-by-demo")
                    cat.set_status(region, victims[1]["id"], "killed")
                    cat.delete(region, victims[2]["id"])

                results = await run_passes(pool, client, partitions, "delta", settings)
                console.print(summary(results, "delta (updated_at ≥ watermark − overlap)"))
                misses = settings.sync.delete_after_missed_sweeps
                console.print(
                    f"a delta never tombstones by absence; a deleted image is tombstoned once"
                    f" {misses} complete full sweeps have missed it"
                )
                for n in range(1, misses + 1):
                    results = await run_passes(pool, client, partitions, "full", settings)
                    console.print(
                        summary(results, f"full sweep {n + 1} (unchanged images cost nothing)")
                    )
                await show_events(pool, console, first_runs)


async def show_events(pool: asyncpg.Pool, console: Console, after_run: int) -> None:
    t = Table(
        title="ims.image_events after the first sync (what a feed consumer receives)",
        title_justify="left",
    )
    for col in ("seq", "region", "image", "kind", "status", "changed fields"):
        t.add_column(col)
    rows = await pool.fetch(
        "SELECT seq, region, image_id, kind, old_status, new_status,"
        " ARRAY(SELECT jsonb_object_keys(changes) ORDER BY 1) AS fields "
        "FROM ims.image_events WHERE sync_run_id > $1 ORDER BY seq",
        after_run,
    )
    for r in rows:
        t.add_row(
            str(r["seq"]),
            r["region"],
            r["image_id"][:8] + "…",
            r["kind"],
            f"{r['old_status'] or '∅'} → {r['new_status']}",
            ", ".join(r["fields"] or ()),
        )
    console.print(t)
    counts = await pool.fetch(
        "SELECT region, image_type, count(*) AS n FROM ims.current_images "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )
    console.print(
        "live images: " + ", ".join(f"{r['region']}/{r['image_type']} {r['n']}" for r in counts)
    )
