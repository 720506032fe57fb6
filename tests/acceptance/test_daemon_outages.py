"""The daemon through outages: PostgreSQL stopped under it, credentials the gateway rejects."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import orjson
from prometheus_client.parser import text_string_to_metric_families

from syncer.simulator import Catalog, Simulator
from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate
from tests.daemon_env import (
    Daemon,
    assert_events_replay_to_the_state,
    daemon_config,
    free_port,
    until,
)

REGIONS = ["cn-north-4"]


async def equal(conn: asyncpg.Connection, sim: Simulator) -> bool:
    for t in ("gold", "private", "shared", "market"):
        want = {o["id"]: o for o in sim.catalog.images(REGIONS[0], t)}
        rows = await conn.fetch(
            "SELECT image_id, raw FROM ims.current_images WHERE image_type = $1", t
        )
        if {r["image_id"]: orjson.loads(r["raw"]) for r in rows} != want:
            return False
    return True


async def test_postgres_stopped_under_a_running_daemon(tmp_path: Path, scratch: Path) -> None:
    """The database down when the daemon starts: it serves /healthz, /readyz says it waits, and
    it starts once the database is there. Then ~10 s without the database while the catalog
    changes: the daemon stays up, /readyz goes 503 then 200, and the next round ends with
    exactly the right events."""
    port = free_port()
    data = scratch / "pg"
    async with Simulator(Catalog(regions=REGIONS, images_per_partition=60, seed=9)) as sim:
        pg = EmbeddedPostgres(data, port=port, durable=False).start()
        try:
            await migrate(pg.dsn)
            pg.stop()  # down at start
            config = daemon_config(
                tmp_path / "d.toml",
                dsn=pg.dsn,
                endpoint=sim.endpoint_template,
                regions=REGIONS,
                port=free_port(),
            )
            d = await Daemon(config, tmp_path / "d.log").start()
            await until(lambda: _status(d, 503), 15, "/readyz 503 while the database is down")
            assert (await d.get("/healthz"))[0] == 200
            _, body = await d.get("/readyz")
            assert "waiting for the database" in orjson.loads(body)["reason"], body
            await asyncio.sleep(2)
            assert d.proc is not None and d.proc.returncode is None, "the daemon gave up"
            pg = EmbeddedPostgres(data, port=port, durable=False).start()
            await d.wait_ready()
            conn = await asyncpg.connect(pg.dsn)
            await until(lambda: equal(conn, sim), 40, "first sweeps")
            await conn.close()

            pg.stop()  # fast shutdown: every session ends
            await until(lambda: _status(d, 503), 15, "/readyz 503 while the database is down")
            _, body = await d.get("/readyz")
            assert "database unreachable" in orjson.loads(body)["reason"]
            cat = sim.catalog
            first = cat.images(REGIONS[0], "private")[0]
            new = cat.create(REGIONS[0], "gold", name="made during the outage")
            cat.set_status(REGIONS[0], first["id"], "killed")
            await asyncio.sleep(8)
            assert d.proc is not None and d.proc.returncode is None, "the daemon died"

            pg = EmbeddedPostgres(data, port=port, durable=False).start()
            await until(lambda: _status(d, 200), 40, "/readyz 200 once it is back")
            conn = await asyncpg.connect(pg.dsn)
            try:
                await until(lambda: equal(conn, sim), 40, "the changes synced after the outage")
                events = await conn.fetch(
                    "SELECT image_id, kind, new_status FROM ims.image_events"
                    " WHERE image_id = ANY($1) ORDER BY seq",
                    [new["id"], first["id"]],
                )
                assert sorted(
                    (e["image_id"], e["kind"], e["new_status"]) for e in events
                ) == sorted(
                    [
                        (first["id"], "created", first["status"]),
                        (new["id"], "created", "queued"),
                        (first["id"], "status_changed", "killed"),
                    ]
                )
                await assert_events_replay_to_the_state(conn)
            finally:
                await conn.close()
            rc, _ = await d.stop()
            assert rc == 0, d.log()[-3000:]
            log = d.log()
            assert "Traceback" not in log
            warnings = [line for line in log.splitlines() if '"level":"warning"' in line]
            assert len(warnings) < 60, "no warning spam while the database is down"
        finally:
            pg.stop()


async def _status(d: Daemon, want: int) -> bool:
    try:
        status, _ = await d.get("/readyz")
    except Exception:
        return False
    return status == want


AK, SK = "AKDAEMON000000000001", "the-real-secret-key"


async def test_a_wrong_secret_key_costs_one_rejected_request(tmp_path: Path, db: str) -> None:
    catalog = Catalog(regions=REGIONS, images_per_partition=20, seed=3)
    async with Simulator(catalog, auth="aksk", ak=AK, sk=SK) as sim:
        config = daemon_config(
            tmp_path / "d.toml",
            dsn=db,
            endpoint=sim.endpoint_template,
            regions=REGIONS,
            port=free_port(),
            auth="aksk",
        )
        env = {
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": "wrong-secret",
            "HUAWEICLOUD_SDK_PROJECT_ID": "0123456789abcdef0123456789abcdef",
        }
        d = await Daemon(config, tmp_path / "d.log", env=env).start()
        try:
            await d.wait_ready()
            await asyncio.sleep(6)  # six delta cycles, two full ones
            rejected = [r for r in sim.requests if r.status in (401, 403)]
            assert len(rejected) == 1, [r.status for r in sim.requests]
            status, body = await d.get("/readyz")
            ready = orjson.loads(body)
            assert status == 200 and "AK/SK rejected" in ready["degraded"], ready
            _, metrics = await d.get("/metrics")
            held = {
                s.labels.get("credential"): s.value
                for f in text_string_to_metric_families(metrics)
                for s in f.samples
                if s.name == "syncer_credential_held_back"
            }
            assert held.get("aksk") == 1.0
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "syncer", "--config", str(config), "status"],
                capture_output=True,
                text=True,
                timeout=60,
                env={k: v for k, v in os.environ.items() if not k.startswith("SYNCER_")},
            )
            assert done.returncode != 0
            assert "rejected" in done.stdout + done.stderr
            assert "wrong-secret" not in done.stdout + done.stderr + d.log()
        finally:
            rc, _ = await d.stop()
        assert rc == 0, d.log()[-3000:]
