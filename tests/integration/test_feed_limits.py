"""Limits of the daemon's HTTP server and the feed: request sizes, concurrent streams and
per-client buffers. Every refusal is a clear 4xx/503 (never a 500 or a traceback) and a metric."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY

from tests.feed_helpers import Served, insert_events, serve, until, with_tuning


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def raw_request(url: str, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as is; the status and the body of the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /v1/events?since=0&x=" + b"a" * 10_000 + b" HTTP/1.1\r\n", id="url"),
        pytest.param(b"GET /healthz?" + b"a" * 10_000 + b" HTTP/1.1\r\n", id="url-healthz"),
        pytest.param(b"GET /v1/events HTTP/1.1\r\nX-Big: " + b"b" * 10_000 + b"\r\n", id="header"),
        pytest.param(
            b"GET /v1/events HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)),
            id="many-headers",
        ),
        pytest.param(b"GET /v1/events HTTP/1.1\r\nBroken header line\r\n", id="malformed"),
    ],
)
async def test_oversized_or_malformed_requests_are_4xx(
    served: Served, http: aiohttp.ClientSession, request_bytes: bytes
) -> None:
    before = sample("syncer_http_requests_refused_total", status="400")
    status, body = await raw_request(
        served.url, request_bytes + b"Host: x\r\nConnection: close\r\n\r\n"
    )
    assert 400 <= status < 500, (status, body)
    assert b"Traceback" not in body and b'File "' not in body
    assert sample("syncer_http_requests_refused_total", status=str(status)) == before + 1
    async with http.get(f"{served.url}/v1/events?since=0") as resp:  # the server carries on
        assert resp.status == 200


async def test_a_large_body_is_413(served: Served, http: aiohttp.ClientSession) -> None:
    before = sample("syncer_feed_refusals_total", status="413")
    url = f"{served.url}/v1/consumers/billing"
    body = orjson.dumps({"cursor": "0", "pad": "x" * 200_000})
    async with http.put(url, data=body) as resp:
        assert resp.status == 413
        doc = orjson.loads(await resp.read())
    assert doc["status"] == 413 and "\n" not in doc["error"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x" * 10_000

    async with http.put(url, data=chunks()) as resp:  # chunked: no Content-Length to judge
        assert resp.status == 413
    assert sample("syncer_feed_refusals_total", status="413") == before + 2
    async with http.put(url, data=orjson.dumps({"cursor": "0"})) as resp:
        assert resp.status == 200


async def test_a_burst_of_streams_never_passes_max_streams(
    db: str, http: aiohttp.ClientSession
) -> None:
    """Slots are taken before the first read, so twenty requests at once cannot all pass the
    check while none has started yet."""
    async with serve(db, max_streams=3) as served:
        before = sample("syncer_feed_streams_refused_total")
        url = f"{served.url}/v1/events/stream?since=0"
        responses = await asyncio.gather(*(http.get(url) for _ in range(20)))
        try:
            statuses = sorted(r.status for r in responses)
            assert statuses == [200] * 3 + [503] * 17, statuses
            assert served.feed.streams == 3
            assert sample("syncer_feed_streams_refused_total") == before + 17
            waits = [http.get(f"{served.url}/v1/events?since=now&wait=5") for _ in range(3)]
            polls = await asyncio.gather(*waits)
            assert [p.status for p in polls] == [503] * 3
            for p in polls:
                p.release()
        finally:
            for r in responses:
                r.release()


@pytest.mark.no_replay_check("hand-made events (one image updated 8,000 times) fill the stream")
async def test_a_slow_reader_holds_a_bounded_buffer(db: str, conn: asyncpg.Connection) -> None:
    """A stream whose client reads nothing while 8,000 events (~3 MB of frames) arrive: the
    server's unsent bytes for it stay within one batch plus the transport's high-water mark,
    and it is cut."""
    tuning = with_tuning(write_timeout=1.5, stream_batch=200)
    async with serve(db, tuning=tuning) as served:
        port = int(served.url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(b"GET /v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert await until(lambda: bool(served.feed.waiting))
        (request,) = served.feed.waiting.values()
        transport = request.transport
        assert transport is not None
        # the kernel's buffers would otherwise swallow megabytes before the server sees a stall
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for _ in range(8):
            await insert_events(conn, 1000)
        most = 0
        for _ in range(1000):
            if not served.feed.streams:
                break
            most = max(most, transport.get_write_buffer_size())
            await asyncio.sleep(0.01)
        assert not served.feed.streams, "the stalled stream was not cut"
        frame = 400  # bytes of one event's frame, generously
        assert 0 < most <= tuning.stream_batch * frame + 64 * 1024, most
        assert sample("syncer_feed_streams_cut_total", reason="slow") >= 1
        writer.close()


@pytest.fixture
async def conn(db: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db)
    try:
        yield c
    finally:
        await c.close()
