"""The simulator's HTTP face: IMS listing, IAM tokens, the control API, and the CLI runner.

URL layout (one process, many regions; see docs/simulator.md):

* ``GET /{region}/v2/cloudimages`` — endpoint template ``http://HOST:PORT/{region}``;
* ``GET /v2/cloudimages`` — the default region (Huawei's SDK keeps only scheme, host and port
  of an endpoint, so it always lands here);
* ``POST /v3/auth/tokens`` and ``POST /{region}/v3/auth/tokens`` — IAM password login;
* ``GET|POST|DELETE /_sim/faults``, ``GET /_sim/stats``, ``POST /_sim/mutate`` — control,
  loopback clients only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import orjson
from aiohttp import web

from syncer.errors import ConfigError
from syncer.ims.signer import parse_query
from syncer.simulator.auth import AuthMode, Gatekeeper, IamError
from syncer.simulator.catalog import Catalog
from syncer.simulator.faults import FaultRule, Faults, parse_faults_spec
from syncer.simulator.listing import list_page
from syncer.simulator.query import QueryError
from syncer.simulator.query import parse_query as parse_listing_query

log = logging.getLogger(__name__)

JSON = "application/json;charset=UTF-8"
LIFE_TICK = 0.25  # seconds between two steps of a living catalog
REQUEST_ID = web.RequestKey("request_id", str)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One listing request as the simulator saw it (for assertions)."""

    region: str
    query: list[tuple[str, str]]
    status: int  # 0 when the connection was dropped
    fault: str | None = None
    at: float = 0.0


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _gateway_error(status: int, code: str, message: str, request_id: str) -> web.Response:
    body = {"error_code": code, "error_msg": message, "request_id": request_id}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _ims_error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


class Simulator:
    """IMS ``GET /v2/cloudimages`` (+ IAM tokens) served on ``host:port`` (0 = ephemeral).

    An async context manager; ``catalog`` and ``faults`` may be changed while it runs.
    ``before_request(query_pairs)`` is called for each authenticated listing request before it
    is answered (tests use it to change the catalog between pages at exact moments).
    """

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        regions: Sequence[str] = ("cn-north-4",),
        images_per_partition: int = 100,
        seed: int = 0,
        auth: AuthMode = "none",
        ak: str = "",
        sk: str = "",
        token: str = "",
        iam_users: Mapping[str, str] | None = None,
        default_region: str | None = None,
        max_limit: int = 1000,
        page_info: bool = True,
        unknown_marker: Literal["error", "empty"] = "error",
        change_rate: float = 0.0,
        faults: Sequence[FaultRule] = (),
        lockout_after: int | None = 5,
        control_from_anywhere: bool = False,
        keep_requests: int = 100_000,
    ) -> None:
        if catalog is None:
            catalog = Catalog(regions=regions, images_per_partition=images_per_partition, seed=seed)
        if default_region is not None and default_region not in catalog.regions:
            raise ValueError(f"default region {default_region!r} is not in the catalog")
        if max_limit < 1:
            raise ValueError("max_limit must be >= 1")
        if unknown_marker not in ("error", "empty"):
            raise ValueError("unknown_marker is 'error' or 'empty'")
        self.catalog = catalog
        self.faults = Faults(list(faults), seed=seed)
        self.gate = Gatekeeper(
            auth,
            ak=ak,
            sk=sk,
            token=token,
            iam_users=iam_users,
            project_id=catalog.tenant_project_id,
            lockout_after=lockout_after,
        )
        self.host = host
        self.port = port
        self.default_region = default_region or catalog.regions[0]
        self.max_limit = max_limit
        self.page_info = page_info
        self.unknown_marker: Literal["error", "empty"] = unknown_marker
        self.change_rate = change_rate
        self.control_from_anywhere = control_from_anywhere
        self.keep_requests = keep_requests
        self.before_request: Callable[[list[tuple[str, str]]], None] | None = None
        self.requests: list[RequestRecord] = []
        self.statuses: Counter[int] = Counter()
        self.fired: Counter[str] = Counter()
        self._life_rng = random.Random(f"life/{seed}")
        self._runner: web.AppRunner | None = None
        self._life: asyncio.Task[None] | None = None
        self.base_url = ""
        self.endpoint_template = ""

    # ---- lifetime ----------------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 20)
        app.router.add_get("/v2/cloudimages", self._list)
        app.router.add_get("/{region}/v2/cloudimages", self._list)
        app.router.add_post("/v3/auth/tokens", self._tokens)
        app.router.add_post("/{region}/v3/auth/tokens", self._tokens)
        app.router.add_get("/_sim/faults", self._faults_get)
        app.router.add_post("/_sim/faults", self._faults_post)
        app.router.add_delete("/_sim/faults", self._faults_delete)
        app.router.add_get("/_sim/stats", self._stats)
        app.router.add_post("/_sim/mutate", self._mutate)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None and isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"http://{host}:{self.port}"
        self.endpoint_template = self.base_url + "/{region}"
        if self.change_rate > 0:
            self._life = asyncio.create_task(self._live(), name="simulator-life")

    async def close(self) -> None:
        if self._life is not None:
            self._life.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._life
            self._life = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @contextlib.contextmanager
    def serve_in_thread(self) -> Iterator[Simulator]:
        """Serve from a background thread with its own event loop (for synchronous clients
        such as Huawei's SDK). ``catalog`` changes made meanwhile from another thread race with
        requests; make them from ``before_request`` to be safe."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="simulator", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(60)
            try:
                yield self
            finally:
                asyncio.run_coroutine_threadsafe(self.close(), loop).result(60)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    async def _live(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(LIFE_TICK)
            now = time.monotonic()
            self.catalog.step(self.change_rate * (now - last), self._life_rng)
            last = now

    # ---- plumbing ----------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = uuid.uuid4().hex
        request[REQUEST_ID] = request_id
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            response = _gateway_error(
                404,
                "APIGW.0101",
                "The API does not exist or has not been published in the environment",
                request_id,
            )
        except web.HTTPMethodNotAllowed:
            response = _gateway_error(405, "APIGW.0101", "Method not allowed", request_id)
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response

    def _record(
        self, region: str, pairs: list[tuple[str, str]], status: int, fault: str | None
    ) -> None:
        self.statuses[status] += 1
        if fault is not None:
            self.fired[fault] += 1
        self.requests.append(RequestRecord(region, pairs, status, fault, time.time()))
        if len(self.requests) > self.keep_requests:
            del self.requests[: len(self.requests) // 2]

    # ---- GET /v2/cloudimages -----------------------------------------------------------

    async def _list(self, request: web.Request) -> web.StreamResponse:
        region = request.match_info.get("region", self.default_region)
        if region not in self.catalog.regions:
            raise web.HTTPNotFound()
        raw_query = request.raw_path.partition("?")[2]
        pairs = parse_query(raw_query)
        body = await request.read()
        url = f"http://{request.host}{request.raw_path}"
        failure = self.gate.check(request.method, url, request.headers, body)
        if failure is not None:
            self._record(region, pairs, failure.status, None)
            return _gateway_error(
                failure.status, failure.code, failure.message, request[REQUEST_ID]
            )
        if self.before_request is not None:
            self.before_request(pairs)

        image_type = next((v for k, v in reversed(pairs) if k == "__imagetype"), None)
        has_marker = any(k == "marker" and v for k, v in pairs)
        decision = self.faults.decide(region, image_type, has_marker)
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        kind = decision.rule.kind if decision.rule is not None else None
        if decision.delay > 0 and kind is None:
            self.fired["slow"] += 1
        if decision.rule is not None and kind in ("429", "500", "503", "drop"):
            return self._fault_response(request, region, pairs, decision.rule)

        try:
            page = list_page(
                self.catalog,
                region,
                parse_listing_query(pairs),
                max_limit=self.max_limit,
                unknown_marker=self.unknown_marker,
            )
        except QueryError as e:
            self._record(region, pairs, 400, None)
            return _ims_error(400, e.code, e.message)
        payload = b'{"images":' + page.images_json()
        if kind == "cut":  # a gateway or proxy ending the listing here: "this was the last page"
            self._record(region, pairs, 200, kind)
            return web.Response(body=payload + b',"page_info":{}}', content_type="application/json")
        if self.page_info:
            info = {} if page.next_marker is None else {"next_marker": page.next_marker}
            payload += b',"page_info":' + orjson.dumps(info)
        payload += b"}"

        if kind == "malformed":  # a complete 200 whose body is not JSON
            self._record(region, pairs, 200, kind)
            return web.Response(
                body=payload[: max(1, len(payload) // 2)], content_type="application/json"
            )
        if kind == "truncated":  # Content-Length promises more than arrives
            self._record(region, pairs, 200, kind)
            response = web.StreamResponse(headers={"X-Request-Id": request[REQUEST_ID]})
            response.content_type = "application/json"
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            if request.transport is not None:
                request.transport.abort()
            return response
        self._record(region, pairs, 200, None)
        return web.Response(body=payload, content_type="application/json")

    def _fault_response(
        self, request: web.Request, region: str, pairs: list[tuple[str, str]], rule: FaultRule
    ) -> web.Response:
        if rule.kind == "drop":
            self._record(region, pairs, 0, "drop")
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        self._record(region, pairs, int(rule.kind), rule.kind)
        if rule.kind == "429":
            response = _gateway_error(
                429,
                "APIGW.0308",
                "The throttling threshold has been reached: policy user over ratelimit,"
                "limit:200,time:1 second",
                request[REQUEST_ID],
            )
            response.headers["Retry-After"] = f"{rule.delay:g}"
            return response
        if rule.kind == "503":
            return _ims_error(503, "IMG.0061", "The service is temporarily unavailable.")
        return _ims_error(500, "IMG.0061", "Unknown system error.")

    # ---- IAM ---------------------------------------------------------------------------

    async def _tokens(self, request: web.Request) -> web.Response:
        region = request.match_info.get("region")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        try:
            issued = self.gate.issue_token(body, region=region or self.default_region)
        except IamError as e:
            title = "Unauthorized" if e.status == 401 else "Bad Request"
            doc = {"error": {"code": e.status, "message": e.message, "title": title}}
            return web.Response(
                status=e.status, body=orjson.dumps(doc), content_type="application/json"
            )
        response = web.Response(
            status=201,
            body=orjson.dumps(self.gate.token_body(issued)),
            content_type="application/json",
        )
        response.headers["X-Subject-Token"] = issued.token
        return response

    # ---- control -----------------------------------------------------------------------

    def _control_allowed(self, request: web.Request) -> None:
        if not (self.control_from_anywhere or _is_loopback(request.remote)):
            raise web.HTTPNotFound()

    async def _faults_get(self, request: web.Request) -> web.Response:
        self._control_allowed(request)
        return web.json_response({"rules": [r.to_json() for r in self.faults.rules]}, dumps=_dumps)

    async def _faults_post(self, request: web.Request) -> web.Response:
        self._control_allowed(request)
        try:
            data = orjson.loads(await request.read())
            items = data if isinstance(data, list) else [data]
            rules = [FaultRule.from_json(item) for item in items]
        except (orjson.JSONDecodeError, ValueError) as e:
            return web.json_response({"error": str(e)}, status=400, dumps=_dumps)
        for rule in rules:
            self.faults.add(rule)
        return web.json_response({"rules": [r.to_json() for r in rules]}, status=201, dumps=_dumps)

    async def _faults_delete(self, request: web.Request) -> web.Response:
        self._control_allowed(request)
        n = len(self.faults.rules)
        self.faults.clear()
        return web.json_response({"cleared": n}, dumps=_dumps)

    async def _mutate(self, request: web.Request) -> web.Response:
        """``{"changes": N[, "seed": S]}`` → N changes spread over every partition, now."""
        self._control_allowed(request)
        try:
            data = orjson.loads(await request.read())
            if not isinstance(data, dict) or set(data) - {"changes", "seed"}:
                raise ValueError('a mutation is {"changes": N} or {"changes": N, "seed": S}')
            changes = data.get("changes")
            seed = data.get("seed")
            if isinstance(changes, bool) or not isinstance(changes, int) or changes < 0:
                raise ValueError("changes must be an integer >= 0")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise ValueError("seed must be an integer")
        except (orjson.JSONDecodeError, ValueError) as e:
            return web.json_response({"error": str(e)}, status=400, dumps=_dumps)
        rng = self._life_rng if seed is None else random.Random(f"mutate/{seed}")
        made = self.catalog.mutate(changes, rng)
        return web.json_response({"changes": sum(made.values()), "by_kind": made}, dumps=_dumps)

    async def _stats(self, request: web.Request) -> web.Response:
        self._control_allowed(request)
        cat = self.catalog
        doc = {
            "requests": sum(self.statuses.values()),
            "by_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "faults_fired": dict(self.fired),
            "changes": cat.changes,
            "images": {r: {t: cat.count(r, t) for t in cat.image_types} for r in cat.regions},
            "default_region": self.default_region,
            "auth": self.gate.mode,
        }
        return web.json_response(doc, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


# ---- `syncer simulate` ---------------------------------------------------------------------


def _credentials(auth: str, env: Mapping[str, str]) -> dict[str, Any]:
    if auth == "aksk":
        ak, sk = env.get("HUAWEICLOUD_SDK_AK", ""), env.get("HUAWEICLOUD_SDK_SK", "")
        if not (ak and sk):
            raise ConfigError(
                "simulate --auth aksk: HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK must be set"
            )
        return {"ak": ak, "sk": sk}
    if auth == "token":
        token = env.get("HUAWEICLOUD_SDK_TOKEN", "")
        user = env.get("HUAWEICLOUD_SDK_USERNAME", "")
        password = env.get("HUAWEICLOUD_SDK_PASSWORD", "")
        domain = env.get("HUAWEICLOUD_SDK_DOMAIN_NAME", "")
        if not token and not (user and password):
            raise ConfigError(
                "simulate --auth token: set HUAWEICLOUD_SDK_TOKEN or "
                "HUAWEICLOUD_SDK_USERNAME/PASSWORD (and DOMAIN_NAME)"
            )
        users = {f"{domain}/{user}" if domain else user: password} if user and password else {}
        return {"token": token, "iam_users": users}
    if auth == "none":
        return {}
    raise ConfigError(f"simulate: unknown --auth {auth!r} (aksk, token or none)")


async def _serve(sim: Simulator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with sim:
            log.info(
                "IMS simulator listening",
                extra={
                    "endpoint": sim.endpoint_template,
                    "regions": ",".join(sim.catalog.regions),
                    "default_region": sim.default_region,
                    "auth": sim.gate.mode,
                },
            )
            await stop.wait()
            log.info("IMS simulator stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_simulator_cli(
    *,
    port: int,
    regions: Sequence[str],
    images_per_partition: int,
    seed: int,
    auth: str,
    change_rate: float,
    faults_spec: str,
    host: str = "127.0.0.1",
    render_cache: int = 250_000,
) -> None:
    """Serve until SIGINT/SIGTERM. Credentials come from the SDK's environment names."""
    if not regions:
        raise ConfigError("simulate: at least one region is needed")
    if images_per_partition < 0 or change_rate < 0:
        raise ConfigError("simulate: --images-per-partition and --change-rate must be >= 0")
    credentials = _credentials(auth, os.environ)
    try:
        faults = parse_faults_spec(faults_spec or "")
    except ValueError as e:
        raise ConfigError(f"simulate --faults: {e}") from None
    began = time.monotonic()
    catalog = Catalog(regions=regions, images_per_partition=images_per_partition, seed=seed)
    catalog.render_cache.limit = render_cache
    log.info(
        "catalog generated",
        extra={
            "images": images_per_partition * len(regions) * len(catalog.image_types),
            "seconds": round(time.monotonic() - began, 1),
        },
    )
    sim = Simulator(
        catalog,
        host=host,
        port=port,
        seed=seed,
        auth=auth,  # type: ignore[arg-type]  # checked by _credentials
        change_rate=change_rate,
        faults=faults,
        **credentials,
    )
    try:
        asyncio.run(_serve(sim))
    except OSError as e:
        raise ConfigError(f"simulate: cannot listen on {host}:{port}: {e.strerror or e}") from None
