"""`syncer status` as a subprocess against a real database filled by real passes: failing and
stale partitions marked, exit status usable as a probe check."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import orjson

from syncer.config import settings_from_mapping
from syncer.ims.backoff import Backoff
from syncer.ims.client import ImsClient
from syncer.simulator import Catalog, FaultRule, Simulator
from syncer.store.pool import open_pool
from syncer.sync.engine import run_passes
from syncer.sync.partitions import plan_partitions
from tests.acceptance.test_cli import syncer

REGION = "cn-north-4"
TYPES = ["gold", "private", "shared"]


def write_config(path: Path, dsn: str, endpoint: str = "http://127.0.0.1:9/{region}") -> None:
    path.write_text(
        f'[database]\ndsn = "{dsn}"\n'
        f'[api]\nendpoint = "{endpoint}"\nauth = "none"\nmax_attempts = 2\n'
        f'[sync]\nregions = ["{REGION}"]\nimage_types = {orjson.dumps(TYPES).decode()}\n'
        'full_interval = "1h"\n'
    )


async def sync(sim: Simulator, dsn: str, types: list[str]) -> list[str]:
    settings = settings_from_mapping(
        {
            "database": {"dsn": dsn},
            "api": {"endpoint": sim.endpoint_template, "auth": "none", "max_attempts": 2},
            "sync": {"regions": [REGION], "image_types": TYPES},
        },
        {},
        "<test>",
    )
    pool = await open_pool(dsn, size=4)
    try:
        fast = Backoff(base=0.01, cap=0.02)
        async with ImsClient(settings.api, settings.credentials, backoff=fast) as client:
            results = await run_passes(
                pool, client, plan_partitions(settings, image_types=types), "full", settings
            )
    finally:
        await pool.close()
    return [r.outcome for r in results]


async def test_status_marks_failing_and_stale_partitions_and_exits_accordingly(
    tmp_path: Path, db: str
) -> None:
    config = tmp_path / "syncer.toml"
    write_config(config, db)
    catalog = Catalog(regions=[REGION], images_per_partition=15, seed=2)
    async with Simulator(catalog) as sim:
        sim.faults.add(FaultRule("503", image_type="private"))
        assert await sync(sim, db, ["gold", "private"]) == ["ok", "failed"]

        # gold ok; private's last pass failed; shared never swept (stale)
        done = syncer("--config", str(config), "status")
        assert done.returncode == 4, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        failing = [line for line in lines if line.startswith(f"{REGION}/private  failing: ")]
        assert len(failing) == 1, done.stdout
        assert "last full pass failed" in failing[0] and "HTTP 503" in failing[0]
        assert "gave up after 2 attempts" in failing[0]
        assert f"{REGION}/shared  stale: no complete full sweep yet" in lines
        assert not any(line.startswith(f"{REGION}/gold  ") for line in lines)
        assert "1 failing, 2 stale of 3 partitions" in done.stdout

        done = syncer("--config", str(config), "status", "--json")
        assert done.returncode == 4
        doc = orjson.loads(done.stdout)
        states = {p["image_type"]: p for p in doc["partitions"]}
        assert {t: p["state"] for t, p in states.items()} == {
            "gold": "ok",
            "private": "failing",
            "shared": "stale",
        }
        assert states["private"]["last_full"]["outcome"] == "failed"
        assert states["gold"]["last_full"]["images_seen"] == 15
        assert states["gold"]["last_full"]["worker"]  # the replica that ran it
        assert states["gold"]["live_images"] == 15 and doc["ok"] is False

        # every partition swept: fresh and ok, exit 0
        sim.faults.clear()
        assert await sync(sim, db, TYPES) == ["ok", "ok", "ok"]
    done = syncer("--config", str(config), "status")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 3 partitions fresh and ok" in done.stdout

    # time passes: gold's last complete sweep is now 3 h old (stale after 2 × 1 h)
    conn = await asyncpg.connect(db)
    try:
        await conn.execute(
            "UPDATE ims.partitions SET last_full_sweep_at = now() - interval '3 hours' "
            "WHERE image_type = 'gold'"
        )
    finally:
        await conn.close()
    done = syncer("--config", str(config), "status", "--runs", "0")
    assert done.returncode == 3, done.stdout
    assert (
        f"{REGION}/gold  stale: last complete full sweep 3h ago (stale after 2h)"
        in done.stdout.splitlines()
    )
    done = syncer("--config", str(config), "status", "--stale-after", "4h")
    assert done.returncode == 0, done.stdout
