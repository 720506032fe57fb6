"""The chaos soak: `syncer run` replicas against a catalog that changes fast, with faults on, while
a script SIGKILLs, SIGTERMs and restarts replicas, restarts PostgreSQL, cuts feed consumers
(SSE and long-poll) and sends the feed hostile requests, all at random. Then the changes stop
and it converges: the database equals the catalog, the event log replays to the state, and
every consumer received exactly the table's events, in order, with no gap and no duplicate;
no answer was a 500, and no replica logged a traceback.

Bounded in `make test` (``SYNCER_SOAK_SECONDS``, default 45 s of chaos, 2 replicas);
``SYNCER_SOAK_SECONDS=300`` runs a longer one (3 replicas from 120 s on). The seed is printed,
and ``SYNCER_SOAK_SEED`` replays a run's choices.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from syncer.simulator import Catalog, FaultRule, Simulator
from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate
from syncer.store.verify import verify_replay
from tests.budget import SOAK_SECONDS
from tests.daemon_env import Daemon, daemon_config, free_port, overlapping_runs, until

REGIONS = ["cn-north-4"]
TYPES = ("gold", "private", "shared", "market")
REPLICAS = 3 if SOAK_SECONDS >= 120 else 2
FAULTS = [
    FaultRule("429", rate=0.05, delay=0.05),
    FaultRule("500", rate=0.03),
    FaultRule("503", rate=0.02),
    FaultRule("slow", rate=0.05, delay=0.5),
    FaultRule("drop", rate=0.02),
    FaultRule("truncated", rate=0.02),
    FaultRule("cut", rate=0.03),
]
HOSTILE = [
    "/v1/events?since=%00",
    "/v1/events?since=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "/v1/events?limit=99999&wait=-1",
    "/v1/events?kind=created,,&region=%E2%80%AE",
    "/v1/events/stream?since=" + "x" * 3000,
    "/v1/images?after=%ff%fe&limit=0",
    "/v1/consumers/%2e%2e",
    "/v1/events?since=0&since=now",
    "/v1/nope",
]


@dataclass
class Consumer:
    """A feed consumer that resumes from the last event it fully received, on any replica."""

    name: str
    kind: str  # "sse" | "poll"
    seqs: list[int] = field(default_factory=list)
    cursor: str = "0"
    cuts: int = 0
    refused: list[str] = field(default_factory=list)  # answers other than 200/503
    task: asyncio.Task[None] | None = None

    def took(self, event: dict[str, Any]) -> None:
        self.seqs.append(event["seq"])
        self.cursor = event["cursor"]

    async def run(self, urls: list[str], rng: random.Random) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_read=20)) as http:
            while True:
                url = rng.choice(urls)
                try:
                    if self.kind == "sse":
                        await self._stream(http, url)
                    else:
                        await self._poll(http, url)
                except (aiohttp.ClientError, TimeoutError, ConnectionError):
                    pass  # that replica went away: resume elsewhere
                await asyncio.sleep(0.2)

    async def _stream(self, http: aiohttp.ClientSession, url: str) -> None:
        headers = {} if self.cursor == "0" else {"Last-Event-ID": self.cursor}
        query = "?since=0" if self.cursor == "0" else ""
        async with http.get(f"{url}/v1/events/stream{query}", headers=headers) as r:
            if r.status != 200:
                self._refused(r.status, await r.text())
                return
            data: str | None = None
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and data is not None:  # a whole event: only now is it ours
                    self.took(orjson.loads(data))
                    data = None

    async def _poll(self, http: aiohttp.ClientSession, url: str) -> None:
        while True:
            params = {"since": self.cursor, "wait": "2", "limit": "50"}
            async with http.get(f"{url}/v1/events", params=params) as r:
                if r.status != 200:
                    self._refused(r.status, await r.text())
                    return
                doc = orjson.loads(await r.read())
            for event in doc["events"]:
                self.took(event)
            self.cursor = doc["next_cursor"]

    def _refused(self, status: int, body: str) -> None:
        if status != 503:  # a replica starting, or without its database: try again
            self.refused.append(f"{status} {body[:200]}")

    def start(self, urls: list[str], rng: random.Random) -> None:
        self.task = asyncio.create_task(self.run(urls, rng), name=f"consumer-{self.name}")

    async def cut(self, urls: list[str], rng: random.Random) -> None:
        await self.stop()
        self.cuts += 1
        self.start(urls, rng)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


class Chaos:
    def __init__(self, pg_data: Path, pg_port: int, daemons: list[Daemon], seed: int) -> None:
        self.pg_data, self.pg_port, self.daemons = pg_data, pg_port, daemons
        self.rng = random.Random(seed)
        self.pg: EmbeddedPostgres | None = None
        self.done: dict[str, int] = {}
        self.statuses: dict[int, int] = {}

    async def start_pg(self) -> None:
        self.pg = await asyncio.to_thread(
            EmbeddedPostgres(self.pg_data, port=self.pg_port, durable=False).start
        )

    async def stop_pg(self) -> None:
        if self.pg is not None:
            await asyncio.to_thread(self.pg.stop)
            self.pg = None

    def note(self, what: str) -> None:
        self.done[what] = self.done.get(what, 0) + 1

    async def act(self, consumers: list[Consumer], urls: list[str]) -> None:
        roll = self.rng.random()
        if roll < 0.25:
            d = self.rng.choice(self.daemons)
            await d.kill()
            await asyncio.sleep(self.rng.uniform(0.5, 3))
            await d.start()
            self.note("SIGKILL + restart a replica")
        elif roll < 0.35:
            d = self.rng.choice(self.daemons)
            # once it serves: a SIGTERM during the interpreter's start-up, before the daemon
            # handles signals, ends it as the default action does (status -15)
            await until(lambda: serving(d), 60, "the replica serving HTTP")
            rc, _ = await d.stop(signal.SIGTERM)
            assert rc == 0, d.log()[-3000:]
            await d.start()
            self.note("SIGTERM + restart a replica")
        elif roll < 0.5:
            await self.stop_pg()
            await asyncio.sleep(self.rng.uniform(1, 4))
            await self.start_pg()
            self.note("restart PostgreSQL")
        elif roll < 0.8:
            await self.rng.choice(consumers).cut(urls, self.rng)
            self.note("cut a consumer")
        else:
            await self.hostile(urls)
            self.note("hostile requests")

    async def hostile(self, urls: list[str]) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            for path in self.rng.sample(HOSTILE, 4):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self.rng.choice(urls) + path) as r:
                        body = await r.read()
                        self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                        assert r.status != 500 and b"Traceback" not in body, (path, body[:300])


async def serving(d: Daemon) -> bool:
    try:
        return (await d.get("/healthz"))[0] == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def db_equals_catalog(dsn: str, sim: Simulator) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        for region in REGIONS:
            for t in TYPES:
                want = {o["id"]: o for o in sim.catalog.images(region, t)}
                rows = await conn.fetch(
                    "SELECT image_id, raw FROM ims.current_images"
                    " WHERE region = $1 AND image_type = $2",
                    region,
                    t,
                )
                if {r["image_id"]: orjson.loads(r["raw"]) for r in rows} != want:
                    return False
        return True
    finally:
        await conn.close()


@pytest.mark.timeout(SOAK_SECONDS + 360)
async def test_chaos_soak(tmp_path: Path, scratch: Path) -> None:
    seed = int(os.environ.get("SYNCER_SOAK_SEED") or random.randrange(10**6))
    print(f"soak seed {seed} ({SOAK_SECONDS}s, {REPLICAS} replicas)")
    rng = random.Random(seed)
    catalog = Catalog(regions=REGIONS, images_per_partition=50, seed=seed)
    async with Simulator(catalog, change_rate=1.0, seed=seed) as sim:
        chaos = Chaos(scratch / "pg", free_port(), [], seed)
        await chaos.start_pg()
        assert chaos.pg is not None
        dsn = chaos.pg.dsn
        await migrate(dsn)
        for rule in FAULTS:
            sim.faults.add(rule)
        daemons = [
            Daemon(
                daemon_config(
                    tmp_path / f"r{i}.toml",
                    dsn=dsn,
                    endpoint=sim.endpoint_template,
                    regions=REGIONS,
                    port=free_port(),
                    page_size=20,
                ),
                tmp_path / f"r{i}.log",
            )
            for i in range(REPLICAS)
        ]
        chaos.daemons = daemons
        urls = [d.url for d in daemons]
        consumers = [Consumer("sse", "sse"), Consumer("poll", "poll")]
        try:
            for d in daemons:
                await d.start()
            for d in daemons:
                await d.wait_ready(60)
            for c in consumers:
                c.start(urls, rng)

            began = time.monotonic()
            while time.monotonic() - began < SOAK_SECONDS:
                await asyncio.sleep(rng.uniform(1, 4))
                await chaos.act(consumers, urls)
            print(f"soak chaos: {chaos.done}; hostile answers {chaos.statuses}")

            # quiet: no changes, no faults, everything up; let it converge
            sim.change_rate = 0.0
            sim.faults.clear()
            if chaos.pg is None:
                await chaos.start_pg()
            for d in daemons:
                if d.proc is None or d.proc.returncode is not None:
                    await d.start()
            for d in daemons:
                await d.wait_ready(60)
            await until(lambda: db_equals_catalog(dsn, sim), 120, "the database equals the catalog")

            conn = await asyncpg.connect(dsn)
            try:
                seqs = [
                    r[0] for r in await conn.fetch("SELECT seq FROM ims.image_events ORDER BY seq")
                ]
                assert len(seqs) > 200, "the soak made too few events to mean much"
                await until(
                    lambda: all(c.seqs[-1:] == seqs[-1:] for c in consumers),
                    60,
                    "every consumer at the head",
                )
                for c in consumers:
                    await c.stop()
                    assert not c.refused, (c.name, c.refused)
                    assert c.seqs == seqs, (
                        f"{c.name}: {len(c.seqs)} events vs {len(seqs)}; first difference at "
                        f"{next((i for i, (x, y) in enumerate(zip(c.seqs, seqs, strict=False)) if x != y), min(len(c.seqs), len(seqs)))}"
                    )
                report = await verify_replay(conn)
                assert report.ok, "\n".join(report.lines())
                assert not await overlapping_runs(conn), "two passes of one partition at once"
                kinds = dict(
                    await conn.fetch("SELECT kind, count(*) FROM ims.image_events GROUP BY 1")
                )
                print(f"soak events: {kinds}; consumer cuts {[c.cuts for c in consumers]}")
                assert {"created", "status_changed", "updated", "deleted"} <= kinds.keys()
            finally:
                await conn.close()
            codes = [(await d.stop())[0] for d in daemons]
            assert codes == [0] * len(daemons)
            assert (
                chaos.done.get("restart PostgreSQL", 0)
                + chaos.done.get("SIGKILL + restart a replica", 0)
                > 0
                or SOAK_SECONDS < 20
            ), chaos.done
            for d in daemons:
                assert "Traceback" not in d.log(), d.log()[-5000:]
        finally:
            for c in consumers:
                await c.stop()
            for d in daemons:
                if d.proc is not None and d.proc.returncode is None:
                    await d.kill()
            await chaos.stop_pg()
