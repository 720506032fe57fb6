"""Credentials the gateway rejects (ImsClient + authgate) against a real local HTTP server:
at most one rejected request per credential and hold-back, whatever the concurrency."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from syncer.config import ApiSettings, Credentials
from syncer.errors import AuthError
from syncer.ims.client import ImsClient
from tests.scripted_ims import Answer, ScriptedIms, Seen, gateway_error, ims_error, queue

AK = "AKGATE1234567890"
SK = "SKGATE0987654321abcdef"
PROJECT = "0123456789abcdef0123456789abcdef"
REGIONS = ("cn-north-4", "ap-southeast-1", "af-south-1")
TYPES = ("gold", "private", "shared", "market")
QUERY = [("__imagetype", "private"), ("limit", "2")]
PAGE = {"images": [{"id": "a", "created_at": "2024-01-01T00:00:00Z"}], "page_info": {}}
REJECTED = gateway_error(401, "APIGW.0301", "Incorrect IAM authentication information")


@pytest.fixture
async def ims() -> AsyncIterator[ScriptedIms]:
    async with ScriptedIms() as server:
        yield server


def client(server: ScriptedIms, *, credentials: Credentials | None = None, **api: Any) -> ImsClient:
    values: dict[str, Any] = {
        "endpoint": server.endpoint,
        "iam_endpoint": server.iam_endpoint,
        "auth": "aksk",
        "max_attempts": 3,
        "request_timeout": 5.0,
        "auth_holdback": 60.0,
    }
    values.update(api)

    async def no_sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    return ImsClient(
        ApiSettings(**values),
        credentials or Credentials(ak=AK, sk=SK, project_id=PROJECT),
        sleep=no_sleep,
        rng=random.Random(1),
    )


async def list_in(c: ImsClient, region: str, image_type: str = "private") -> Any:
    return await c.list_images(region, QUERY, partition=f"{region}/{image_type}")


async def every_partition(c: ImsClient) -> list[BaseException | Any]:
    return await asyncio.gather(
        *(list_in(c, r, t) for r in REGIONS for t in TYPES), return_exceptions=True
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_wrong_sk_costs_one_request_for_twelve_concurrent_partitions(
    ims: ScriptedIms,
) -> None:
    ims.handler = queue(then=REJECTED)
    rejected_before = sample("syncer_credential_rejections_total", credential="aksk")
    status_before = sum(
        sample("syncer_ims_requests_total", region=r, status="401") for r in REGIONS
    )
    async with client(ims) as c:
        results = await every_partition(c)
        problem = c.credential_problem()
        hold = c.credential_hold(REGIONS[1])
    assert len(ims.seen) == 1
    assert all(isinstance(r, AuthError) for r in results)
    errors = [r for r in results if isinstance(r, AuthError)]
    # the same reason everywhere, tagged with each request's own partition
    reasons = {str(e).split(": ", 1)[1] for e in errors}
    assert len(reasons) == 1, reasons
    (reason,) = reasons
    assert reason.startswith("AK/SK rejected: Incorrect IAM authentication information")
    assert "held back for 1m until" in reason
    assert {e.partition for e in errors} == {f"{r}/{t}" for r in REGIONS for t in TYPES}
    assert all(e.status == 401 and e.code == "APIGW.0301" and not e.transient for e in errors)
    assert problem is not None and problem.startswith("AK/SK rejected (HTTP 401, APIGW.0301): ")
    assert hold is not None and hold.credential == "aksk" and hold.holdback == 60.0
    for secret in (AK, SK):
        assert secret not in problem and all(secret not in str(e) for e in errors)
    assert sample("syncer_credential_rejections_total", credential="aksk") == rejected_before + 1
    assert sample("syncer_credential_held_back", credential="aksk") == 1.0
    assert sample("syncer_credential_held_back_until_timestamp_seconds", credential="aksk") > 0
    status_after = sum(sample("syncer_ims_requests_total", region=r, status="401") for r in REGIONS)
    assert status_after == status_before + 1


async def test_after_the_holdback_one_probe_then_a_success_resets(ims: ScriptedIms) -> None:
    accept = False

    async def handler(seen: Seen) -> Answer:
        await asyncio.sleep(0.01)
        return Answer(200, PAGE) if accept else REJECTED

    ims.handler = handler
    async with client(ims, auth_holdback=0.2, auth_holdback_max=10.0) as c:
        await every_partition(c)  # cycle 1: one rejected request
        assert len(ims.seen) == 1
        results = await every_partition(c)  # cycle 2, within the hold-back: nothing sent
        assert len(ims.seen) == 1 and all(isinstance(r, AuthError) for r in results)
        await asyncio.sleep(0.25)
        results = await every_partition(c)  # cycle 3: one probe, rejected again
        assert len(ims.seen) == 2 and all(isinstance(r, AuthError) for r in results)
        hold = c.credential_hold(REGIONS[0])
        assert hold is not None and hold.holdback == 0.4  # the hold-back doubles
        accept = True  # the operator fixed the key at the gateway's side
        await asyncio.sleep(0.45)
        results = await every_partition(c)  # cycle 4: the probe succeeds, everyone goes
        assert not any(isinstance(r, BaseException) for r in results), results
        assert c.credential_problem() is None and c.credential_holds() == []
        assert len(ims.seen) == 2 + 12
        assert ims.max_in_flight > 1  # proven: requests no longer wait for one another
    assert sample("syncer_credential_held_back", credential="aksk") == 0.0


async def test_unproven_credential_sends_one_request_until_an_answer_proves_it(
    ims: ScriptedIms,
) -> None:
    arrivals: list[int] = []

    async def handler(seen: Seen) -> Answer:
        arrivals.append(ims.in_flight)
        await asyncio.sleep(0.05)
        return Answer(200, PAGE)

    ims.handler = handler
    async with client(ims, region_concurrency=8, max_concurrency=16) as c:
        await asyncio.gather(*(list_in(c, REGIONS[0]) for _ in range(6)))
    assert arrivals[0] == 1 and len(arrivals) == 6
    assert ims.max_in_flight == 5  # the first alone, then the five that waited for it


async def test_an_answer_that_proves_nothing_lets_the_next_request_try(ims: ScriptedIms) -> None:
    # 503s and a dropped connection say nothing about the credential: waiters take turns,
    # nobody is stuck, and IMS's own 400 (past the gateway) proves the credential.
    ims.handler = queue(
        ims_error(503, "IMG.0061"),
        Answer(drop=True),
        Answer(drop=True),
        ims_error(400, "IMG.0024", "The imagetype is invalid."),
        then=Answer(200, PAGE),
    )
    async with client(ims, max_attempts=5) as c:
        results = await asyncio.gather(
            *(list_in(c, REGIONS[0]) for _ in range(4)), return_exceptions=True
        )
    assert sum(isinstance(r, BaseException) for r in results) == 1  # the one that got the 400
    assert c.credential_problem() is None


async def test_cancelled_probe_lets_a_waiter_probe(ims: ScriptedIms) -> None:
    parked = asyncio.Event()
    calls = 0

    async def handler(seen: Seen) -> Answer:
        nonlocal calls
        calls += 1
        if calls == 1:
            parked.set()
            await asyncio.wait_for(ims.release.wait(), 5)
        return Answer(200, PAGE)

    ims.handler = handler
    async with client(ims) as c:
        probe = asyncio.create_task(list_in(c, REGIONS[0]))
        await parked.wait()
        waiter = asyncio.create_task(list_in(c, REGIONS[1]))
        await asyncio.sleep(0.05)
        assert not waiter.done() and len(ims.seen) == 1  # waiting for the probe's outcome
        probe.cancel()
        page = await asyncio.wait_for(waiter, 5)
        assert page.images and len(ims.seen) == 2
        with pytest.raises(asyncio.CancelledError):
            await probe


async def test_a_revoked_key_rejected_in_flight_holds_back_once(ims: ScriptedIms) -> None:
    # Proven, then revoked: the requests already in flight may each be rejected, but the
    # hold-back starts once (not doubled per request) and nothing more is sent.
    revoked = False
    arrived = 0
    all_in = asyncio.Event()

    async def handler(seen: Seen) -> Answer:
        nonlocal arrived
        if not revoked:
            return Answer(200, PAGE)
        arrived += 1
        if arrived == 4:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), 5)
        return REJECTED

    ims.handler = handler
    async with client(ims, auth_holdback=30.0) as c:
        await list_in(c, REGIONS[0])
        revoked = True
        results = await asyncio.gather(
            *(list_in(c, REGIONS[0]) for _ in range(4)), return_exceptions=True
        )
        assert all(isinstance(r, AuthError) for r in results)
        hold = c.credential_hold(REGIONS[0])
        assert hold is not None and hold.holdback == 30.0
        results = await every_partition(c)
        assert all(isinstance(r, AuthError) for r in results)
    assert len(ims.seen) == 1 + 4


async def test_holdback_doubles_up_to_its_cap(ims: ScriptedIms) -> None:
    ims.handler = queue(then=REJECTED)
    seen: list[float] = []
    async with client(ims, auth_holdback=0.02, auth_holdback_max=0.05) as c:
        for _ in range(4):
            with pytest.raises(AuthError):
                await list_in(c, REGIONS[0])
            hold = c.credential_hold(REGIONS[0])
            assert hold is not None
            seen.append(hold.holdback)
            await asyncio.sleep(hold.holdback + 0.01)
    assert seen == [0.02, 0.04, 0.05, 0.05]
    assert len(ims.seen) == 4


async def test_static_token_is_held_back_per_region(ims: ScriptedIms) -> None:
    async def handler(seen: Seen) -> Answer:
        return REJECTED if seen.path.startswith(f"/{REGIONS[0]}/") else Answer(200, PAGE)

    ims.handler = handler
    credentials = Credentials(token="TOKGATE-static-token", project_id=PROJECT)
    async with client(ims, auth="token", credentials=credentials) as c:
        results = await every_partition(c)
        problem = c.credential_problem()
        assert c.credential_hold(REGIONS[1]) is None
    failed = [r for r in results if isinstance(r, AuthError)]
    assert {e.region for e in failed} == {REGIONS[0]} and len(failed) == 4
    assert len([s for s in ims.seen if s.path.startswith(f"/{REGIONS[0]}/")]) == 1
    assert problem is not None and problem.startswith(f"token for {REGIONS[0]} rejected")
    assert "TOKGATE" not in problem


async def test_iam_password_rejected_once_for_every_region(ims: ScriptedIms) -> None:
    ims.handler = queue(then=Answer(401, {"error": {"code": 401, "message": "wrong password"}}))
    credentials = Credentials(
        project_id=PROJECT, domain="dom", username="alice", password="PWGATE-secret"
    )
    async with client(ims, auth="token", credentials=credentials) as c:
        results = await every_partition(c)
        problem = c.credential_problem()
    assert all(isinstance(r, AuthError) for r in results)
    assert len(ims.seen) == 1 and ims.seen[0].method == "POST"
    assert problem is not None and problem.startswith("IAM password login rejected (HTTP 401)")
    assert "PWGATE" not in problem


async def test_iam_token_is_still_renewed_once_under_the_gate(ims: ScriptedIms) -> None:
    issued: list[str] = []

    async def handler(seen: Seen) -> Answer:
        if seen.method == "POST":
            token = f"tok-{len(issued) + 1}"
            issued.append(token)
            return Answer(201, {"token": {}}, headers={"X-Subject-Token": token})
        if seen.headers.get("X-Auth-Token") == "tok-2":
            return Answer(200, PAGE)
        return gateway_error(401, "APIGW.0307", "The token must be updated.")

    ims.handler = handler
    credentials = Credentials(project_id=PROJECT, domain="dom", username="alice", password="pw12")
    async with client(ims, auth="token", credentials=credentials) as c:
        pages = await asyncio.gather(*(list_in(c, REGIONS[0]) for _ in range(4)))
        assert c.credential_problem() is None
    assert len(pages) == 4 and issued == ["tok-1", "tok-2"]
    listing = ims.listing_requests()
    assert [s.headers["X-Auth-Token"] for s in listing] == ["tok-1"] + ["tok-2"] * 4


async def test_a_late_rejection_from_before_a_recovery_does_not_hold_back() -> None:
    """The gate alone: a request admitted before a rejection, answered 401 only after the
    credential was accepted again, neither crashes nor holds the credential back."""
    from syncer.ims.authgate import CredentialGate

    gate = CredentialGate(holdback=0.01)
    error = AuthError("no", status=401, code="APIGW.0301", region="r", partition="r/gold")
    async with gate.admit("aksk", "AK/SK", region="r", partition="r/gold") as first:
        first.accepted()
    async with gate.admit("aksk", "AK/SK", region="r", partition="r/gold") as slow:
        async with gate.admit("aksk", "AK/SK", region="r", partition="r/gold") as quick:
            quick.rejected(error)
        await asyncio.sleep(0.02)
        async with gate.admit("aksk", "AK/SK", region="r", partition="r/gold") as probe:
            probe.accepted()
        assert slow.rejected(error) is error
    assert gate.holds() == []
