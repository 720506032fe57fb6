"""The daemon's HTTP server on a real local port: health, readiness, metrics, bounded stop."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from syncer import metrics
from syncer.web import ListenError, Listening, build_app, serve

Reason = str | None


class Ready:
    """A readiness check the test steers."""

    def __init__(self) -> None:
        self.reason: Reason = None
        self.hang = False
        self.fail = False

    async def __call__(self) -> Reason:
        if self.fail:
            raise RuntimeError("the check itself broke\nwith two lines")
        if self.hang:
            await asyncio.sleep(3600)
        return self.reason


@pytest.fixture
async def server() -> AsyncIterator[tuple[Listening, Ready]]:
    ready = Ready()
    async with serve(build_app(ready), "127.0.0.1", 0, shutdown_timeout=0.5) as where:
        yield where, ready


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.headers["Content-Type"], await response.read()


async def test_healthz(server: tuple[Listening, Ready]) -> None:
    where, ready = server
    ready.hang = True  # health never depends on readiness
    status, content_type, body = await get(where.url + "/healthz")
    assert status == 200 and orjson.loads(body) == {"status": "ok"}
    assert content_type.startswith("application/json")


async def test_readyz_follows_the_check(server: tuple[Listening, Ready]) -> None:
    where, ready = server
    status, _, body = await get(where.url + "/readyz")
    assert status == 200 and orjson.loads(body) == {"status": "ready"}
    ready.reason = "database unreachable: connection refused"
    status, content_type, body = await get(where.url + "/readyz")
    assert status == 503 and content_type.startswith("application/json")
    assert orjson.loads(body) == {
        "status": "unavailable",
        "reason": "database unreachable: connection refused",
    }


async def test_readyz_answers_within_a_second_when_the_check_hangs(
    server: tuple[Listening, Ready],
) -> None:
    where, ready = server
    ready.hang = True
    began = time.monotonic()
    status, _, body = await get(where.url + "/readyz")
    assert time.monotonic() - began < 1.0
    assert status == 503
    assert orjson.loads(body)["reason"] == "readiness check did not answer within 0.8s"


async def test_readyz_broken_check_is_a_one_line_503(server: tuple[Listening, Ready]) -> None:
    where, ready = server
    ready.fail = True
    status, _, body = await get(where.url + "/readyz")
    assert status == 503
    reason = orjson.loads(body)["reason"]
    assert reason == "readiness check failed: RuntimeError: the check itself broke with two lines"


async def test_metrics_parse_as_prometheus_text(server: tuple[Listening, Ready]) -> None:
    where, _ = server
    metrics.observe_request("xx-web-1", 200, 0.12)
    metrics.set_database_up(True)
    status, content_type, body = await get(where.url + "/metrics")
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    requests = families["syncer_ims_requests"]
    assert requests.type == "counter"
    assert any(
        s.labels == {"region": "xx-web-1", "status": "200"} and s.value >= 1
        for s in requests.samples
    )
    assert families["syncer_ims_request_duration_seconds"].type == "histogram"
    assert families["syncer_database_up"].samples[0].value == 1
    assert not any(name.endswith("_created") for name in families)

    status, content_type, body = await get(
        where.url + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


async def test_other_layers_add_routes_before_serving() -> None:
    async def ready() -> Reason:
        return None

    async def events(request: web.Request) -> web.Response:
        return web.json_response({"events": []})

    app = build_app(ready)
    app.router.add_get("/v1/events", events)  # what Feed.install(app) will do
    async with serve(app, "127.0.0.1", 0) as where:
        status, _, body = await get(where.url + "/v1/events")
    assert status == 200 and orjson.loads(body) == {"events": []}


async def test_stop_is_bounded_and_closes_every_socket() -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def ready() -> Reason:
        return None

    async def forever(request: web.Request) -> web.StreamResponse:  # a long poll, an SSE stream
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response()

    app = build_app(ready)
    app.router.add_get("/v1/events/stream", forever)
    async with aiohttp.ClientSession() as session:
        async with serve(app, "127.0.0.1", 0, shutdown_timeout=0.3) as where:
            pending = asyncio.create_task(session.get(where.url + "/v1/events/stream"))
            await asyncio.wait_for(entered.wait(), 5)
            began = time.monotonic()
        stopped_in = time.monotonic() - began
        assert stopped_in < 2.0
        assert cancelled.is_set()
        with pytest.raises(aiohttp.ClientError):  # its connection was closed under it
            response = await asyncio.wait_for(pending, 5)
            await response.read()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", where.port), timeout=1):
        pass  # nothing listens any more


async def test_address_in_use_is_one_line() -> None:
    async def ready() -> Reason:
        return None

    async with serve(build_app(ready), "127.0.0.1", 0) as where:
        with pytest.raises(ListenError) as raised:
            async with serve(build_app(ready), "127.0.0.1", where.port):
                pass
    assert str(raised.value).startswith(f"cannot listen on 127.0.0.1:{where.port}: ")
    assert "\n" not in str(raised.value)
