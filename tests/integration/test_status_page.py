"""The status page (GET /) in a real headless browser: Debian's Chromium driven by Playwright.

The real daemon (`run_daemon`, in this process) syncs a simulated catalog into a real
PostgreSQL and serves the page; the browser loads it, shows every partition and their live
counts, and shows an event committed after the page loaded within 2 s. The daemon is then
stopped, events are committed while it is down, and a new daemon starts on the same port: the
page resumes the feed after the last event it showed (EventSource sends Last-Event-ID itself;
with a token the page reads the stream with fetch and sends it) and shows each event once.

Chromium missing: skipped with a one-line reason, except in CI (CI=true), where `.ci/run`
installs it, and its absence is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from playwright.async_api import async_playwright, expect

from syncer.config import settings_from_mapping
from syncer.daemon import run_daemon
from syncer.simulator import Simulator
from tests.daemon_env import free_port, until
from tests.feed_helpers import insert_events

REGIONS = ["cn-north-4", "ap-southeast-1"]
PARTITIONS = [f"{r}/{t}" for r in REGIONS for t in ("gold", "private", "shared", "market")]
CHROMIUM = os.environ.get("SYNCER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "page-token-7f3c9a"


def chromium_or_skip() -> str:
    if os.path.exists(CHROMIUM) or shutil.which(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"no Chromium at {CHROMIUM} in CI (.ci/run installs Debian's chromium)")
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set SYNCER_CHROMIUM)")


@contextlib.asynccontextmanager
async def daemon(dsn: str, sim: Simulator, port: int, token: str = "") -> AsyncIterator[str]:
    """`run_daemon` in this process on 127.0.0.1:port until the block ends; its URL."""
    settings = settings_from_mapping(
        {
            "database": {"dsn": dsn},
            "api": {"endpoint": sim.endpoint_template, "auth": "none", "page_size": 50},
            "sync": {
                "regions": REGIONS,
                "full_interval": "1h",
                "delta_interval": "1h",
                "stop_timeout": "5s",
            },
            "feed": {"listen": f"127.0.0.1:{port}", "token": token},
        },
        {},
        "<test>",
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_daemon(settings, stop=stop, handle_signals=False))
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def swept() -> bool:
        if task.done():
            task.result()
        with contextlib.suppress(aiohttp.ClientError):
            async with (
                aiohttp.ClientSession() as s,
                s.get(url + "/v1/status", headers=headers) as r,
            ):
                doc = orjson.loads(await r.read()) if r.status == 200 else None
                return doc is not None and all(p["state"] == "ok" for p in doc["partitions"])
        return False

    try:
        await until(swept, 30, "every partition swept")
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(regions=REGIONS, images_per_partition=6, seed=3) as s:
        yield s


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    executable = chromium_or_skip()

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def conn(db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db)
    yield c
    await c.close()


async def rows_for(page: Any, image_id: str) -> int:
    return int(await page.locator(f'#events tr[data-image-id="{image_id}"]').count())


async def assert_partitions_and_counts(page: Any, conn: asyncpg.Connection) -> None:
    """Every configured partition, each ok, and the live counts the database has."""
    rows = page.locator("#partitions tr[data-partition]")
    # (locator waits: the page's Content-Security-Policy forbids eval, as it should)
    await expect(rows).to_have_count(len(PARTITIONS), timeout=10_000)
    names = await rows.evaluate_all("rs => rs.map(r => r.dataset.partition)")
    assert sorted(names) == sorted(PARTITIONS)
    states = await rows.evaluate_all("rs => rs.map(r => r.dataset.state)")
    assert set(states) == {"ok"}, states
    live = await conn.fetch(
        "SELECT region, image_type, count(*) AS n FROM ims.current_images GROUP BY 1, 2"
    )
    assert len(live) == len(PARTITIONS)
    for r in live:
        cell = page.locator(f'#counts td[data-count="{r["region"]}/{r["image_type"]}"]')
        assert await cell.inner_text() == str(r["n"])


async def assert_event_shown_within_2s(page: Any, conn: asyncpg.Connection) -> None:
    await page.wait_for_selector('#feed-state[data-state="live"]', timeout=5000)
    began = time.monotonic()
    await insert_events(conn, 1, tag="live")
    await page.wait_for_selector('#events tr[data-image-id="img-live-1"]', timeout=2000)
    assert time.monotonic() - began < 2.0


@pytest.mark.no_replay_check("hand-made events without their image rows")
async def test_status_page_shows_partitions_and_follows_the_feed(
    db: str, conn: asyncpg.Connection, sim: Simulator, browser: Any
) -> None:
    port = free_port()
    page = await browser.new_page()
    async with daemon(db, sim, port) as url:
        await page.goto(url + "/")
        await assert_partitions_and_counts(page, conn)
        await assert_event_shown_within_2s(page, conn)
    # the daemon stopped; events are committed while it is down; a new daemon on the same
    # port: the page resumes after the last event it showed, and shows each event once
    await insert_events(conn, 3, tag="down")
    async with daemon(db, sim, port):
        await insert_events(conn, 1, tag="after")
        for image_id in ("img-down-1", "img-down-2", "img-down-3", "img-after-1"):
            await page.wait_for_selector(f'#events tr[data-image-id="{image_id}"]', timeout=15000)
        for image_id in ("img-live-1", "img-down-1", "img-down-2", "img-down-3"):
            assert await rows_for(page, image_id) == 1, image_id
        seqs = await page.locator("#events tr[data-seq]").evaluate_all(
            "rs => rs.map(r => Number(r.dataset.seq))"
        )
        assert seqs == sorted(seqs, reverse=True)  # in commit order, newest first


@pytest.mark.no_replay_check("hand-made events without their image rows")
async def test_status_page_asks_for_the_token(
    db: str, conn: asyncpg.Connection, sim: Simulator, browser: Any
) -> None:
    port = free_port()
    page = await browser.new_page()
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    async with daemon(db, sim, port, token=TOKEN) as url:
        await page.goto(url + "/")
        await page.wait_for_selector('#feed-state[data-state="needs-token"]', timeout=5000)
        assert await page.locator("#partitions tr[data-partition]").count() == 0
        await page.fill("#token-input", "not-the-token")
        await page.click("#token-form button")
        await page.wait_for_selector("#token-error:has-text('the token was refused')")
        await page.fill("#token-input", TOKEN)
        await page.click("#token-form button")
        await assert_partitions_and_counts(page, conn)
        await assert_event_shown_within_2s(page, conn)
    # with a token the page reads the stream with fetch, and resumes with Last-Event-ID itself
    await insert_events(conn, 2, tag="down")
    async with daemon(db, sim, port, token=TOKEN):
        for image_id in ("img-down-1", "img-down-2"):
            await page.wait_for_selector(f'#events tr[data-image-id="{image_id}"]', timeout=15000)
        for image_id in ("img-live-1", "img-down-1", "img-down-2"):
            assert await rows_for(page, image_id) == 1, image_id
    assert urls and not [u for u in urls if TOKEN in u], "the token went into a URL"


async def test_status_json_and_the_page_over_plain_http(db: str, sim: Simulator) -> None:
    """No browser needed: the page's headers, /v1/status's document, and its guard."""
    async with (
        daemon(db, sim, free_port(), token=TOKEN) as url,
        aiohttp.ClientSession() as s,
    ):
        async with s.get(url + "/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "connect-src 'self'" in csp
            page = await r.text()
            assert "/v1/events/stream" in page and "EventSource" in page
            assert "http://" not in page and "https://" not in page  # nothing from elsewhere
        async with s.get(url + "/v1/status") as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with s.get(url + "/v1/status?x=1", headers=auth) as r:
            body = await r.read()
            assert r.status == 400 and body.count(b"\n") == 0, body
        async with s.get(url + "/v1/status", headers=auth) as r:
            assert r.status == 200
            doc = orjson.loads(await r.read())
    assert doc["regions"] == REGIONS and doc["exit_status"] == 0 and doc["ok"] is True
    names = [f"{p['region']}/{p['image_type']}" for p in doc["partitions"]]
    assert sorted(names) == sorted(PARTITIONS)
    assert doc["live_images"] == sum(p["live_images"] for p in doc["partitions"]) > 0
    for p in doc["partitions"]:
        assert p["state"] == "ok" and p["last_full"]["outcome"] == "ok", p
