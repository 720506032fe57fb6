"""A synced catalog with a scripted history, played ONCE per session into a database that each
test of this folder gets a clone of (``CREATE DATABASE … TEMPLATE``): the reporting views and
the SQL cookbook are checked against it.

Real passes against the simulator (2 regions x 4 types x 30 images; the generated catalog has
one upload queued since long ago and one killed image), then:

* sweep 2: three uploads appear (``queued``), an active gold image disappears, one is renamed;
* sweep 3: the three uploads are ``saving``; the vanished image is tombstoned (missed twice);
* delta 4: one upload ``active``, one ``killed``, one stays ``saving`` (stuck); one partition
  fails (HTTP 500), and fails again in a fifth pass of its own;
* a feed consumer stores an offset five events behind the head.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from syncer.simulator import Catalog, FaultRule, Simulator
from syncer.sync.partitions import Partition
from tests.conftest import OWNER, PgServer
from tests.sync_env import REGIONS, Env

REGION = REGIONS[0]
FAILING = Partition(REGIONS[1], "market")
IMAGES_PER_PARTITION = 30
SEED = 3
IMAGE_TYPES = ("gold", "private", "shared", "market")
PLAYED_DB = "syncer_reporting_played"


@dataclass(frozen=True)
class Scenario:
    uploaded: str  # queued -> saving -> active
    killed: str  # queued -> saving -> killed
    stuck: str  # queued -> saving, still saving
    deleted: str  # an active gold image gone from the listing: tombstoned by the third sweep
    renamed: str
    tombstoning_run_id: int  # the ims.sync_runs pass that tombstoned `deleted`
    # (region, image type, object) of every image the simulator lists at the end
    catalog: tuple[tuple[str, str, dict[str, Any]], ...]


@dataclass(frozen=True)
class Played:
    scenario: Scenario
    dsn: str  # this test's clone, as the owner role
    admin_dsn: str  # the same database as a superuser (who may SET ROLE ims_reader)


async def play(env: Env) -> Scenario:
    cat = env.sim.catalog
    await _all_ok(env.sync())

    uploaded = cat.create(REGION, "private", name="upload that succeeds")["id"]
    killed = cat.create(REGION, "private", name="upload that fails")["id"]
    stuck = cat.create(REGION, "private", name="upload that hangs")["id"]
    gold = [o for o in cat.images(REGION, "gold") if o["status"] == "active"]
    deleted, renamed = gold[0]["id"], gold[1]["id"]
    cat.delete(REGION, deleted)
    cat.update(REGION, renamed, name="renamed by its owner")
    await _all_ok(env.sync())

    for image_id in (uploaded, killed, stuck):
        cat.set_status(REGION, image_id, "saving")
    await _all_ok(env.sync())

    cat.set_status(REGION, uploaded, "active")
    cat.set_status(REGION, killed, "killed")
    env.sim.faults.add(FaultRule("500", region=FAILING.region, image_type=FAILING.image_type))
    results = await env.sync("delta", api={"max_attempts": 1})
    assert sorted(r.partition for r in results if r.outcome != "ok") == [FAILING]
    again = await env.sync("delta", partitions=[FAILING], api={"max_attempts": 1})
    assert [r.outcome for r in again] == ["failed"]

    # a feed consumer five events behind (as PUT /v1/consumers/{name} stores it)
    await env.pool.execute(
        "INSERT INTO ims.feed_consumers (name, cursor, seq) "
        "SELECT 'billing', 'opaque', max(seq) - 5 FROM ims.image_events"
    )
    run_id = await env.pool.fetchval(
        "SELECT sync_run_id FROM ims.image_events WHERE image_id = $1 AND kind = 'deleted'",
        deleted,
    )
    listed = tuple(
        (region, t, obj) for region in REGIONS for t in IMAGE_TYPES for obj in cat.images(region, t)
    )
    return Scenario(uploaded, killed, stuck, deleted, renamed, run_id, listed)


async def _all_ok(passes: Any) -> None:
    results = await passes
    assert all(r.outcome == "ok" for r in results), [r.error for r in results]


async def _admin(pg_server: PgServer, statement: str) -> None:
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def played_template(pg_server: PgServer, template_db: str) -> AsyncIterator[Scenario]:
    await _admin(pg_server, f"DROP DATABASE IF EXISTS {PLAYED_DB} WITH (FORCE)")
    await _admin(pg_server, f"CREATE DATABASE {PLAYED_DB} TEMPLATE {template_db} OWNER {OWNER}")
    catalog = Catalog(regions=REGIONS, images_per_partition=IMAGES_PER_PARTITION, seed=SEED)
    dsn = pg_server.dsn(user=OWNER, database=PLAYED_DB)
    async with Simulator(catalog) as sim, Env.open(sim, dsn) as env:
        scenario = await play(env)
    yield scenario  # the pool is closed: the database can be a template
    await _admin(pg_server, f"DROP DATABASE IF EXISTS {PLAYED_DB} WITH (FORCE)")


@pytest.fixture
async def played(pg_server: PgServer, played_template: Scenario) -> AsyncIterator[Played]:
    """A clone of the played database for this test alone."""
    name = f"r_{uuid.uuid4().hex[:12]}"
    await _admin(pg_server, f"CREATE DATABASE {name} TEMPLATE {PLAYED_DB} OWNER {OWNER}")
    yield Played(
        played_template, pg_server.dsn(user=OWNER, database=name), pg_server.dsn(database=name)
    )
    await _admin(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
