"""The simulator over real HTTP: URL layout, options, auth modes, IAM, faults, control API, CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from syncer.ims.signer import canonical_query, sign
from syncer.simulator import Catalog, FaultRule, Simulator

REGIONS = ("cn-north-4", "ap-southeast-1")
AK, SK = "AKSIM0000000000000001", "SKsim-secret"
PROJECT = "0605767e5f0025bd2f81c00c2e9c0d30"


async def get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    async with http.get(URL(url, encoded=True), headers=headers or {}) as r:
        body = await r.read()
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = body
        return r.status, doc, r.headers


def listing_url(base: str, pairs: list[tuple[str, str]]) -> str:
    query = canonical_query(pairs)
    return f"{base}/v2/cloudimages" + (f"?{query}" if query else "")


async def test_regions_in_the_path_and_a_default_region_at_the_root(
    http: aiohttp.ClientSession,
) -> None:
    catalog = Catalog(regions=REGIONS, images_per_partition=5, seed=1)
    async with Simulator(catalog, default_region="ap-southeast-1") as sim:
        assert sim.endpoint_template == sim.base_url + "/{region}"
        for region in REGIONS:
            base = sim.endpoint_template.format(region=region)
            status, doc, headers = await get(http, listing_url(base, [("__imagetype", "gold")]))
            assert status == 200 and headers["X-Request-Id"]
            assert [i["id"] for i in doc["images"]] == [
                i["id"] for i in reversed(catalog.images(region, "gold"))
            ]
        status, doc, _ = await get(http, listing_url(sim.base_url, [("__imagetype", "gold")]))
        assert {i["id"] for i in doc["images"]} == {
            i["id"] for i in catalog.images("ap-southeast-1", "gold")
        }
        status, doc, headers = await get(http, sim.base_url + "/eu-nowhere-9/v2/cloudimages")
        assert status == 404 and doc["error_code"] == "APIGW.0101" and headers["X-Request-Id"]
        status, doc, _ = await get(http, sim.base_url + "/v2/images")
        assert status == 404 and doc["error_code"] == "APIGW.0101"
        assert [(r.region, r.status) for r in sim.requests] == [
            ("cn-north-4", 200), ("ap-southeast-1", 200), ("ap-southeast-1", 200)
        ]  # fmt: skip


async def test_bad_parameters_get_the_ims_400_body(http: aiohttp.ClientSession) -> None:
    async with Simulator(images_per_partition=3) as sim:
        for pairs, code in [
            ([("sort_key", "owner")], "IMG.0017"),
            ([("limit", "-5")], "IMG.0017"),
            ([("created_at", "gte:yesterday")], "IMG.0017"),
            ([("__imagetype", "silver")], "IMG.0024"),
            ([("marker", "00000000-0000-4000-8000-000000000000")], "IMG.0066"),
        ]:
            status, doc, headers = await get(http, listing_url(sim.base_url, pairs))
            assert status == 400 and doc["error"]["code"] == code and doc["error"]["message"]
            assert headers["X-Request-Id"]


async def test_paging_alternatives(http: aiohttp.ClientSession) -> None:
    catalog = Catalog(regions=REGIONS[:1], images_per_partition=10, seed=1)
    async with Simulator(catalog, page_info=False, max_limit=4, unknown_marker="empty") as sim:
        pairs = [("__imagetype", "private"), ("limit", "100")]
        status, doc, _ = await get(http, listing_url(sim.base_url, pairs))
        assert status == 200 and "page_info" not in doc and len(doc["images"]) == 4
        status, doc, _ = await get(http, listing_url(sim.base_url, [("marker", "gone")]))
        assert status == 200 and doc == {"images": []}
    async with Simulator(catalog) as sim:
        pairs = [("__imagetype", "private"), ("limit", "100")]
        status, doc, _ = await get(http, listing_url(sim.base_url, pairs))
        assert len(doc["images"]) == 10 and doc["page_info"] == {}
        status, doc, _ = await get(http, listing_url(sim.base_url, [*pairs[:1], ("limit", "3")]))
        assert doc["page_info"] == {"next_marker": doc["images"][-1]["id"]}


def signed(url: str, **headers: str) -> dict[str, str]:
    return sign("GET", url, {"X-Project-Id": PROJECT, **headers}, b"", AK, SK)


async def test_aksk_verifies_signatures_exactly(http: aiohttp.ClientSession) -> None:
    async with Simulator(auth="aksk", ak=AK, sk=SK, regions=REGIONS, lockout_after=None) as sim:
        base = sim.endpoint_template.format(region="ap-southeast-1")
        url = listing_url(base, [("__imagetype", "private"), ("limit", "2"), ("name", "a b+ü")])
        status, _, _ = await get(http, url, signed(url))
        assert status == 200
        # the signature covers path, query and signed headers
        status, doc, _ = await get(http, url.replace("limit=2", "limit=3"), signed(url))
        assert (status, doc["error_code"]) == (401, "APIGW.0301")
        other = listing_url(sim.base_url, [("__imagetype", "private"), ("limit", "2")])
        status, doc, _ = await get(http, other, signed(url))
        assert (status, doc["error_code"]) == (401, "APIGW.0301")
        status, doc, _ = await get(http, url, {**signed(url), "X-Project-Id": "other"})
        assert (status, doc["error_code"]) == (401, "APIGW.0301")
        wrong = sign("GET", url, {}, b"", AK, SK + "x")
        status, doc, _ = await get(http, url, wrong)
        assert (status, doc["error_code"]) == (401, "APIGW.0301")
        status, doc, _ = await get(http, url)
        assert (status, doc["error_code"]) == (401, "APIGW.0301")
        old = (datetime.now(UTC) - timedelta(minutes=16)).strftime("%Y%m%dT%H%M%SZ")
        status, doc, _ = await get(http, url, signed(url, **{"X-Sdk-Date": old}))
        assert (status, doc["error_code"]) == (401, "APIGW.0303")
        near = (datetime.now(UTC) - timedelta(minutes=14)).strftime("%Y%m%dT%H%M%SZ")
        status, _, _ = await get(http, url, signed(url, **{"X-Sdk-Date": near}))
        assert status == 200
        assert [r.status for r in sim.requests] == [200, 401, 401, 401, 401, 401, 401, 200]


async def test_an_ak_is_locked_after_repeated_failures(http: aiohttp.ClientSession) -> None:
    async with Simulator(auth="aksk", ak=AK, sk=SK, lockout_after=2) as sim:
        url = listing_url(sim.base_url, [("limit", "1")])
        wrong = sign("GET", url, {}, b"", AK, "not-the-sk")
        for _ in range(3):
            status, _, _ = await get(http, url, wrong)
            assert status == 401
        status, doc, _ = await get(http, url, signed(url))
        assert status == 401 and "locked" in doc["error_msg"]


def password_body(user: str, password: str, domain: str = "acme", **scope: str) -> dict[str, Any]:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "password": password, "domain": {"name": domain}}
                },
            },
            "scope": {"project": scope or {"name": "cn-north-4"}},
        }
    }


async def test_token_mode_and_iam_token_issuance(http: aiohttp.ClientSession) -> None:
    async with Simulator(
        auth="token", token="static-token", iam_users={"acme/alice": "s3cret"}, regions=REGIONS
    ) as sim:
        url = listing_url(sim.base_url, [("limit", "1")])
        status, doc, _ = await get(http, url)
        assert (status, doc["error_code"]) == (401, "APIGW.0301")
        status, _, _ = await get(http, url, {"X-Auth-Token": "static-token"})
        assert status == 200
        for path in ("/v3/auth/tokens", "/ap-southeast-1/v3/auth/tokens"):
            async with http.post(sim.base_url + path, json=password_body("alice", "s3cret")) as r:
                assert r.status == 201
                token = r.headers["X-Subject-Token"]
                doc = await r.json()
            assert doc["token"]["project"]["id"] == PROJECT
            assert doc["token"]["expires_at"] > doc["token"]["issued_at"]
            status, _, _ = await get(http, url, {"X-Auth-Token": token})
            assert status == 200
        async with http.post(
            sim.base_url + "/v3/auth/tokens", json=password_body("alice", "wrong")
        ) as r:
            assert r.status == 401 and "X-Subject-Token" not in r.headers
        async with http.post(
            sim.base_url + "/v3/auth/tokens", json=password_body("alice", "s3cret", domain="evil")
        ) as r:
            assert r.status == 401
        async with http.post(sim.base_url + "/v3/auth/tokens", data=b"{}") as r:
            assert r.status == 400
        status, doc, _ = await get(http, url, {"X-Auth-Token": "MIIforged"})
        assert (status, doc["error_code"]) == (401, "APIGW.0301")


async def test_faults(http: aiohttp.ClientSession) -> None:
    catalog = Catalog(regions=REGIONS, images_per_partition=6, seed=2)
    async with Simulator(catalog) as sim:
        base = sim.base_url
        page1 = listing_url(base, [("__imagetype", "private"), ("limit", "2")])

        sim.faults.add(FaultRule("429", delay=3, times=1))
        status, doc, headers = await get(http, page1)
        assert (status, doc["error_code"], headers["Retry-After"]) == (429, "APIGW.0308", "3")
        assert doc["request_id"] == headers["X-Request-Id"]
        status, _, _ = await get(http, page1)
        assert status == 200  # times=1 is used up

        for kind, code in (("500", "IMG.0061"), ("503", "IMG.0061")):
            sim.faults.clear()
            sim.faults.add(FaultRule(kind))  # type: ignore[arg-type]
            status, doc, _ = await get(http, page1)
            assert (status, doc["error"]["code"]) == (int(kind), code)

        sim.faults.clear()
        sim.faults.add(FaultRule("malformed"))
        status, body, _ = await get(http, page1)
        assert status == 200 and isinstance(body, bytes)  # not JSON

        sim.faults.clear()
        sim.faults.add(FaultRule("drop"))
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await get(http, page1)

        sim.faults.clear()
        sim.faults.add(FaultRule("truncated"))
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(http, page1)

        sim.faults.clear()
        rule = FaultRule("slow", delay=0.3)
        sim.faults.add(rule)
        began = time.monotonic()
        status, _, _ = await get(http, page1)
        assert status == 200 and time.monotonic() - began >= 0.3 and rule.fired == 1

        # targeted: only page 2+ of one partition of one region
        sim.faults.clear()
        sim.faults.add(
            FaultRule("500", region="cn-north-4", image_type="private", with_marker=True)
        )
        status, doc, _ = await get(http, page1)
        assert status == 200
        page2 = listing_url(
            base,
            [
                ("__imagetype", "private"),
                ("limit", "2"),
                ("marker", doc["page_info"]["next_marker"]),
            ],
        )
        assert (await get(http, page2))[0] == 500
        gold2 = listing_url(base, [("__imagetype", "gold"), ("marker", doc["images"][0]["id"])])
        assert (await get(http, gold2))[0] == 200
        other_region = page2.replace(base, sim.endpoint_template.format(region="ap-southeast-1"))
        assert (await get(http, other_region))[0] == 400  # that marker is unknown there

        # a rate: about that share of requests fail
        sim.faults.clear()
        sim.faults.add(FaultRule("503", rate=0.3))
        statuses = [(await get(http, page1))[0] for _ in range(200)]
        assert 30 < statuses.count(503) < 90
        faults = [r.fault for r in sim.requests]
        assert {"429", "500", "503", "malformed", "drop", "truncated"} <= set(faults)


async def test_control_api_and_stats(http: aiohttp.ClientSession) -> None:
    async with Simulator(images_per_partition=4) as sim:
        ctl = sim.base_url + "/_sim/faults"
        async with http.post(ctl, json={"kind": "503", "times": 2, "image_type": "gold"}) as r:
            assert r.status == 201
        async with http.post(ctl, json=[{"kind": "slow", "delay": 0.01}]) as r:
            assert r.status == 201
        async with http.post(ctl, json={"kind": "teapot"}) as r:
            assert r.status == 400 and "teapot" in (await r.json())["error"]
        async with http.post(ctl, json={"kind": "500", "rate": 2}) as r:
            assert r.status == 400
        gold = listing_url(sim.base_url, [("__imagetype", "gold")])
        assert [(await get(http, gold))[0] for _ in range(3)] == [503, 503, 200]
        async with http.get(ctl) as r:
            rules = (await r.json())["rules"]
        assert [(x["kind"], x["fired"]) for x in rules] == [("503", 2), ("slow", 3)]
        async with http.get(sim.base_url + "/_sim/stats") as r:
            stats = await r.json()
        assert stats["requests"] == 3 and stats["by_status"] == {"200": 1, "503": 2}
        assert stats["images"] == {"cn-north-4": dict.fromkeys(sim.catalog.image_types, 4)}
        async with http.delete(ctl) as r:
            assert (await r.json()) == {"cleared": 2}
        assert sim.faults.rules == []


async def test_control_api_mutates_the_catalog(http: aiohttp.ClientSession) -> None:
    async with Simulator(images_per_partition=10) as sim:
        url = sim.base_url + "/_sim/mutate"
        async with http.post(url, json={"changes": 12, "seed": 3}) as r:
            assert r.status == 200
            doc = await r.json()
        assert doc["changes"] == 12 == sum(doc["by_kind"].values()) == sim.catalog.changes
        for bad in ({"changes": -1}, {"changes": "x"}, {"changes": 1, "what": 2}, [1]):
            async with http.post(url, json=bad) as r:
                assert r.status == 400


async def test_a_living_catalog_changes_by_itself() -> None:
    async with Simulator(images_per_partition=20, change_rate=40) as sim:
        await asyncio.sleep(0.8)
        assert sim.catalog.changes > 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_run_simulator_cli_serves_until_sigterm(http: aiohttp.ClientSession) -> None:
    port = free_port()
    code = (
        "from syncer.simulator.server import run_simulator_cli\n"
        f"run_simulator_cli(port={port}, regions=['cn-north-4', 'eu-west-101'], "
        "images_per_partition=30, seed=3, auth='aksk', change_rate=0.0, "
        "faults_spec='429:0.0,slow:0.0:0.1', host='127.0.0.1')\n"
    )
    env = {**os.environ, "HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        url = listing_url(f"http://127.0.0.1:{port}/eu-west-101", [("limit", "7")])
        for _ in range(100):
            try:
                status, doc, _ = await get(http, url, signed(url))
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the simulator did not start")
        assert status == 200 and len(doc["images"]) == 7
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_run_simulator_cli_refuses_missing_credentials() -> None:
    code = (
        "from syncer.errors import ConfigError\n"
        "from syncer.simulator.server import run_simulator_cli\n"
        "try:\n"
        "    run_simulator_cli(port=0, regions=['r'], images_per_partition=1, seed=0,\n"
        "                      auth='aksk', change_rate=0.0, faults_spec='', host='127.0.0.1')\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUAWEICLOUD_SDK_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "HUAWEICLOUD_SDK_AK" in out.stdout
