"""A real local HTTP server that tests script request by request (for the IMS client/pager).

``ScriptedIms`` is an aiohttp.web server on 127.0.0.1:0. Each request is recorded and answered
by ``handler`` (a coroutine taking the ``Seen`` request and returning an ``Answer``). Answers
can be JSON, raw bytes, any status and headers, a dropped connection, or a body cut off in the
middle. ``ListingHandler`` serves a scripted ``/v2/cloudimages`` over an in-memory image list
with the behaviours of reference/ims-api-facts.md and their alternatives.
"""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from syncer.ims.signer import parse_query


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # without the query
    raw_query: str  # exactly as it came over the wire
    headers: dict[str, str]
    body: bytes
    url: str  # http://host:port/path?query as the server saw it

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return parse_query(self.raw_query)

    def param(self, name: str) -> str | None:
        return next((v for k, v in reversed(self.pairs) if k == name), None)

    def params(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]


@dataclass
class Answer:
    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without an answer
    truncate: bool = False  # promise the whole body, send half, close
    chunked: bool = False  # no Content-Length: the body in 1 MiB chunks
    gzip: bool = False  # Content-Encoding: gzip (with chunked: the size is known only decoded)

    def payload(self) -> bytes:
        if self.body is not None:
            return self.body
        return orjson.dumps(self.json if self.json is not None else {})


def gateway_error(status: int, code: str, message: str = "gateway says no") -> Answer:
    rid = uuid.uuid4().hex
    return Answer(status, {"error_code": code, "error_msg": message, "request_id": rid})


def ims_error(status: int, code: str, message: str = "IMS says no") -> Answer:
    return Answer(status, {"error": {"code": code, "message": message}})


Handler = Callable[[Seen], Awaitable[Answer]]


class ScriptedIms:
    def __init__(self, handler: Handler | None = None, *, ssl_context: Any = None) -> None:
        self.handler: Handler = handler or _default
        self.ssl_context = ssl_context
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_prefix: dict[str, int] = {}
        self.max_in_flight_by_prefix: dict[str, int] = {}
        self.release = asyncio.Event()  # handlers that park wait on this; set at close
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    @property
    def endpoint(self) -> str:
        """An ``api.endpoint`` template: requests land on ``/{region}/v2/cloudimages``."""
        return self.base_url + "/{region}"

    @property
    def iam_endpoint(self) -> str:
        return self.base_url + "/iam/{region}"

    async def __aenter__(self) -> ScriptedIms:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        scheme = "https" if self.ssl_context is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def listing_requests(self) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith("/v2/cloudimages")]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path
        path, _, raw_query = raw_path.partition("?")
        seen = Seen(
            request.method,
            path,
            raw_query,
            dict(request.headers),
            await request.read(),
            f"http://{request.host}{raw_path}",
        )
        self.seen.append(seen)
        prefix = path.strip("/").split("/")[0]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        n = self.in_flight_by_prefix.get(prefix, 0) + 1
        self.in_flight_by_prefix[prefix] = n
        self.max_in_flight_by_prefix[prefix] = max(self.max_in_flight_by_prefix.get(prefix, 0), n)
        try:
            answer = await self.handler(seen)
        finally:
            self.in_flight -= 1
            self.in_flight_by_prefix[prefix] -= 1
        payload = answer.payload()
        headers = {"X-Request-Id": f"req-{len(self.seen)}", **answer.headers}
        if answer.drop:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if answer.truncate:
            response = web.StreamResponse(status=answer.status, headers=headers)
            response.content_type = "application/json"
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            assert request.transport is not None
            request.transport.abort()
            return response
        if answer.gzip:
            payload = gzip.compress(payload, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        if answer.chunked:
            response = web.StreamResponse(status=answer.status, headers=headers)
            response.content_type = "application/json"
            response.enable_chunked_encoding()
            await response.prepare(request)
            step = 1 << 20
            try:
                for i in range(0, len(payload), step):
                    await response.write(payload[i : i + step])
                await response.write_eof()
            except ConnectionError:
                pass  # the client stopped reading
            return response
        return web.Response(
            status=answer.status, body=payload, headers=headers, content_type="application/json"
        )


async def _default(seen: Seen) -> Answer:
    return Answer(200, {"images": []})


def queue(*answers: Answer, then: Answer | None = None) -> Handler:
    """A handler answering with ``answers`` in order, then ``then`` (default: an empty page)."""
    pending = list(answers)
    last = then or Answer(200, {"images": [], "page_info": {}})

    async def handler(seen: Seen) -> Answer:
        return pending.pop(0) if pending else last

    return handler


# ---- a scripted listing ---------------------------------------------------------------------


EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def image(n: int, second: int, *, start: datetime = EPOCH, **extra: Any) -> dict[str, Any]:
    """An image object with id ``img-NNNN`` created at ``start`` (2024-01-01T00:00:00Z) +
    ``second``."""
    created = (start + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "id": f"img-{n:04d}",
        "name": f"image {n}",
        "status": "active",
        "created_at": created,
        "updated_at": created,
        **extra,
    }


def images_at(seconds: Iterable[int], *, start: datetime = EPOCH) -> list[dict[str, Any]]:
    return [image(n, s, start=start) for n, s in enumerate(seconds)]


class ListingHandler:
    """Serves ``/v2/cloudimages`` over ``images`` (sorted by created_at, id) with the facts
    file's choices, or their alternatives: ``page_info`` on/off, ``max_limit`` (a cap on limit),
    ``unknown_marker`` ("error" → 400 IMG.0066, "empty" → an empty page). ``before(seen, n)``
    runs before the n-th listing request (1-based) is answered: tests change ``images`` there;
    ``override(seen, n)`` may return an Answer that replaces the normal one."""

    def __init__(
        self,
        images: list[dict[str, Any]],
        *,
        page_info: bool = True,
        max_limit: int = 1000,
        unknown_marker: str = "error",
    ) -> None:
        self.images = list(images)
        self.page_info = page_info
        self.max_limit = max_limit
        self.unknown_marker = unknown_marker
        self.count = 0
        self.before: Callable[[Seen, int], None] | None = None
        self.override: Callable[[Seen, int], Answer | None] | None = None

    def ordered(self) -> list[dict[str, Any]]:
        return sorted(self.images, key=lambda i: (i["created_at"], i["id"]))

    def delete(self, image_id: str) -> None:
        self.images = [i for i in self.images if i["id"] != image_id]

    async def __call__(self, seen: Seen) -> Answer:
        self.count += 1
        if self.before is not None:
            self.before(seen, self.count)
        if self.override is not None:
            answer = self.override(seen, self.count)
            if answer is not None:
                return answer
        return self.page(seen)

    def page(self, seen: Seen) -> Answer:
        rows = self.ordered()
        for condition in seen.params("created_at"):
            op, _, moment = condition.partition(":")
            assert op == "gte", condition
            rows = [r for r in rows if r["created_at"] >= moment]
        for condition in seen.params("updated_at"):
            op, _, moment = condition.partition(":")
            assert op == "gte", condition
            rows = [r for r in rows if r["updated_at"] >= moment]
        for wanted in seen.params("id"):
            rows = [r for r in rows if r["id"] == wanted]
        marker = seen.param("marker")
        if marker:
            position = next((i for i, r in enumerate(rows) if r["id"] == marker), None)
            if position is None:
                everywhere = [r["id"] for r in self.images]
                if marker not in everywhere:
                    if self.unknown_marker == "error":
                        return ims_error(400, "IMG.0066", "The image id is invalid.")
                    rows = []
                else:  # the marker exists but the filters exclude it: place it in order
                    anchor = next(r for r in self.images if r["id"] == marker)
                    key = (anchor["created_at"], anchor["id"])
                    rows = [r for r in rows if (r["created_at"], r["id"]) > key]
            else:
                rows = rows[position + 1 :]
        limit = min(int(seen.param("limit") or 500), self.max_limit)
        page = rows[:limit]
        doc: dict[str, Any] = {"images": page}
        if self.page_info:
            full = len(page) == limit and page
            doc["page_info"] = {"next_marker": page[-1]["id"]} if full else {}
        return Answer(200, doc)
