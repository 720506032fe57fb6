"""`syncer feed tail` as a subprocess against a real feed server: one line per event, and after
the server goes away and comes back it resumes with Last-Event-ID — nothing lost or repeated."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

import asyncpg
import orjson
import pytest
from aiohttp import web

from syncer.feed import Feed
from tests.feed_helpers import feed_settings, insert_events, with_tuning

pytestmark = pytest.mark.no_replay_check(
    "the feed's transport tests write hand-made events without image rows"
)

TUNING = with_tuning(retry_ms=200)


@contextlib.asynccontextmanager
async def server(dsn: str, port: int = 0, **feed: str) -> AsyncIterator[int]:
    app = web.Application()
    async with Feed(feed_settings(dsn, **feed), tuning=TUNING) as f:
        f.install(app)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield runner.addresses[0][1]
        finally:
            await runner.cleanup()


async def tail(*args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "HUAWEICLOUD_"))}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncer",
        "feed",
        "tail",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )


async def lines(proc: asyncio.subprocess.Process, n: int) -> list[str]:
    assert proc.stdout is not None
    return [
        (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().rstrip("\n") for _ in range(n)
    ]


async def test_tail_prints_and_resumes_across_a_server_restart(db: str) -> None:
    conn = await asyncpg.connect(db)
    proc: asyncio.subprocess.Process | None = None
    try:
        first = await insert_events(conn, 3)
        async with server(db) as port:
            proc = await tail("--url", f"http://127.0.0.1:{port}", "--json", "--since", "0")
            got = [orjson.loads(line) for line in await lines(proc, 3)]
            assert [e["seq"] for e in got] == first
        second = await insert_events(conn, 2)  # committed while the server is gone
        async with server(db, port=port):
            third = await insert_events(conn, 2)
            got = [orjson.loads(line) for line in await lines(proc, 4)]
            assert [e["seq"] for e in got] == second + third
        proc.terminate()
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
        assert b"reconnecting" in stderr and b"resuming" in stderr
        assert b"Traceback" not in stderr
    finally:
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await conn.close()


async def test_tail_text_lines_and_filters(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        await insert_events(conn, 1, kind="created", region="ap-southeast-1")
        await insert_events(conn, 1, kind="deleted")
        async with server(db) as port:
            proc = await tail(
                "--url", f"http://127.0.0.1:{port}", "--since", "0", "--kind", "deleted"
            )
            try:
                [line] = await lines(proc, 1)
            finally:
                proc.terminate()
                await proc.wait()
        assert "#2" in line and "deleted" in line and "cn-north-4/img-x-1" in line
        assert "queued → active" in line and "changed: name" in line
    finally:
        await conn.close()


async def test_tail_refused_is_one_line(db: str) -> None:
    async with server(db, token="right") as port:
        env_token = {"SYNCER_FEED_TOKEN": "wrong"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "syncer",
            "feed",
            "tail",
            "--url",
            f"http://127.0.0.1:{port}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env_token},
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 1
    [line] = stderr.decode().strip().splitlines()
    assert line.startswith("syncer: ") and "HTTP 401" in line


async def test_tail_without_url_or_config_says_so() -> None:
    proc = await tail()
    _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 1
    [line] = stderr.decode().strip().splitlines()
    assert "no configuration" in line and "--url" in line
