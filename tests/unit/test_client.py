"""ImsClient against a real local HTTP server scripted per test (no mocked session)."""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from prometheus_client import REGISTRY

from syncer.config import ApiSettings, Credentials
from syncer.errors import ApiError, AuthError, ConfigError, MalformedResponse
from syncer.ims import signer
from syncer.ims.client import AnswerTooLarge, EndpointError, ImsClient, ListPage
from tests.scripted_ims import Answer, ScriptedIms, Seen, gateway_error, ims_error, queue

AK = "AKSECRET1234567890"
SK = "SKSECRET0987654321abcdef"
TOKEN = "TOKSECRET-static-token-value"
PASSWORD = "PWSECRET-hunter2"
SK_WITH_SPACES = 'SKSECRET  with "quotes"/+ and  spaces'
PROJECT = "0123456789abcdef0123456789abcdef"
REGION = "cn-north-4"
PARTITION = "cn-north-4/private"
QUERY = [("__imagetype", "private"), ("limit", "2")]
PAGE = {"images": [{"id": "a", "created_at": "2024-01-01T00:00:00Z"}], "page_info": {}}


class Sleeps:
    """An injected sleep that records and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
async def ims() -> AsyncIterator[ScriptedIms]:
    async with ScriptedIms() as server:
        yield server


def settings(server: ScriptedIms, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "endpoint": server.endpoint,
        "iam_endpoint": server.iam_endpoint,
        "auth": "aksk",
        "max_attempts": 4,
        "request_timeout": 5.0,
    }
    values.update(overrides)
    return ApiSettings(**values)


def creds(**overrides: Any) -> Credentials:
    values: dict[str, Any] = {"ak": AK, "sk": SK, "project_id": PROJECT}
    values.update(overrides)
    return Credentials(**values)


def client(
    server: ScriptedIms,
    sleeps: Sleeps | None = None,
    *,
    credentials: Credentials | None = None,
    increase_after: int = 8,
    **api: Any,
) -> ImsClient:
    return ImsClient(
        settings(server, **api),
        credentials or creds(),
        sleep=sleeps or Sleeps(),
        rng=random.Random(7),
        increase_after=increase_after,
    )


async def list_once(c: ImsClient, query: list[tuple[str, str]] | None = None) -> ListPage:
    return await c.list_images(REGION, query or QUERY, partition=PARTITION)


# ---- signing and what goes over the wire ----------------------------------------------------


async def test_aksk_request_is_signed_and_query_sent_exactly_as_signed(ims: ScriptedIms) -> None:
    ims.handler = queue(Answer(200, PAGE))
    query = [
        ("name", "CentOS 7.3 64bit+ü/中文"),
        ("created_at", "gte:2024-01-02T03:04:05Z"),
        ("__imagetype", "private"),
        ("limit", "500"),
        ("marker", "b5b9c0a2-0000-4000-8000-000000000001"),
        ("tag", "k=v&x"),
    ]
    async with client(ims) as c:
        await c.list_images(REGION, query, partition=PARTITION)
    (seen,) = ims.seen
    assert seen.path == f"/{REGION}/v2/cloudimages"
    assert seen.raw_query == signer.canonical_query(query)  # byte for byte: sorted, enc()'d
    assert sorted(seen.pairs) == sorted(query)
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["X-Project-Id"] == PROJECT
    assert seen.headers["Authorization"].startswith(f"SDK-HMAC-SHA256 Access={AK}, ")
    assert "X-Sdk-Date" in seen.headers
    assert signer.signature_matches("GET", seen.url, seen.headers, seen.body, AK, SK)
    assert not signer.signature_matches("GET", seen.url, seen.headers, seen.body, AK, SK + "x")


async def test_project_id_per_region(ims: ScriptedIms) -> None:
    ims.handler = queue(then=Answer(200, PAGE))
    async with client(ims, project_ids={"ap-southeast-1": "p-ap"}) as c:
        await c.list_images("ap-southeast-1", QUERY, partition="ap-southeast-1/private")
        await list_once(c)
    assert [s.headers["X-Project-Id"] for s in ims.seen] == ["p-ap", PROJECT]
    assert all(signer.signature_matches("GET", s.url, s.headers, s.body, AK, SK) for s in ims.seen)


async def test_auth_none_sends_no_auth_headers(ims: ScriptedIms) -> None:
    ims.handler = queue(Answer(200, PAGE))
    async with client(ims, auth="none", credentials=Credentials()) as c:
        await list_once(c)
    headers = {k.lower() for k in ims.seen[0].headers}
    assert not headers & {"authorization", "x-auth-token", "x-sdk-date", "x-project-id"}
    assert ims.seen[0].headers["Content-Type"] == "application/json"


async def test_page_is_parsed_with_everything_kept(ims: ScriptedIms) -> None:
    obj = {"id": "x", "created_at": "2024-01-01T00:00:00Z", "__new_field": {"nested": [1]}}
    ims.handler = queue(
        Answer(200, {"images": [obj], "page_info": {"next_marker": "x"}}),
        Answer(200, {"images": []}),
    )
    async with client(ims) as c:
        first = await list_once(c)
        second = await list_once(c)
    assert first == ListPage([obj], "x", True, "req-1", first.server_time)
    assert second == ListPage([], None, False, "req-2", second.server_time)
    # the Date header aiohttp's server sends: the API's clock, for the delta watermark
    assert first.server_time is not None
    assert abs((first.server_time - datetime.now(UTC)).total_seconds()) < 60


# ---- token auth -----------------------------------------------------------------------------


def iam_and_listing(tokens: list[str], accepted: set[str], issued: list[str]) -> Any:
    """IAM hands out ``tokens`` in turn; the listing accepts only ``accepted`` tokens."""

    async def handler(seen: Seen) -> Answer:
        if seen.method == "POST" and seen.path.endswith("/v3/auth/tokens"):
            token = tokens.pop(0)
            issued.append(token)
            return Answer(201, {"token": {"expires_at": "x"}}, headers={"X-Subject-Token": token})
        if seen.headers.get("X-Auth-Token") in accepted:
            return Answer(200, PAGE)
        return gateway_error(401, "APIGW.0307", "The token must be updated.")

    return handler


def iam_creds() -> Credentials:
    return Credentials(project_id=PROJECT, domain="dom", username="alice", password=PASSWORD)


async def test_static_token_is_sent_as_x_auth_token(ims: ScriptedIms) -> None:
    ims.handler = queue(Answer(200, PAGE))
    async with client(
        ims, auth="token", credentials=Credentials(token=TOKEN, project_id=PROJECT)
    ) as c:
        await list_once(c)
    (seen,) = ims.seen
    assert seen.headers["X-Auth-Token"] == TOKEN
    assert seen.headers["X-Project-Id"] == PROJECT
    assert "Authorization" not in seen.headers


async def test_static_token_rejected_is_not_renewed(ims: ScriptedIms) -> None:
    ims.handler = queue(then=gateway_error(401, "APIGW.0307"))
    async with client(
        ims, auth="token", credentials=Credentials(token=TOKEN, project_id=PROJECT)
    ) as c:
        with pytest.raises(AuthError):
            await list_once(c)
    assert len(ims.seen) == 1


async def test_token_from_iam_is_obtained_once_and_cached_per_region(ims: ScriptedIms) -> None:
    issued: list[str] = []
    ims.handler = iam_and_listing(["tok-1", "tok-2"], {"tok-1", "tok-2"}, issued)
    async with client(ims, auth="token", credentials=iam_creds()) as c:
        await asyncio.gather(*(list_once(c) for _ in range(5)))
        await c.list_images("ap-southeast-1", QUERY, partition="ap-southeast-1/private")
    iam = [s for s in ims.seen if s.method == "POST"]
    assert [s.path for s in iam] == [
        f"/iam/{REGION}/v3/auth/tokens",
        "/iam/ap-southeast-1/v3/auth/tokens",
    ]
    body = orjson.loads(iam[0].body)
    assert body["auth"]["identity"]["methods"] == ["password"]
    assert body["auth"]["identity"]["password"]["user"] == {
        "name": "alice",
        "password": PASSWORD,
        "domain": {"name": "dom"},
    }
    assert body["auth"]["scope"] == {"project": {"id": PROJECT}}
    listing = ims.listing_requests()
    assert [s.headers["X-Auth-Token"] for s in listing] == ["tok-1"] * 5 + ["tok-2"]


async def test_iam_token_older_than_max_age_is_renewed_before_use(ims: ScriptedIms) -> None:
    issued: list[str] = []
    ims.handler = iam_and_listing(["tok-1", "tok-2"], {"tok-1", "tok-2"}, issued)
    api = settings(ims, auth="token")
    async with ImsClient(api, iam_creds(), sleep=Sleeps(), token_max_age=0.0) as c:
        await list_once(c)
        await list_once(c)
    assert issued == ["tok-1", "tok-2"]
    assert [s.headers["X-Auth-Token"] for s in ims.listing_requests()] == ["tok-1", "tok-2"]


async def test_iam_token_renewed_once_on_401(ims: ScriptedIms) -> None:
    issued: list[str] = []
    ims.handler = iam_and_listing(["tok-old", "tok-new"], {"tok-new"}, issued)
    async with client(ims, auth="token", credentials=iam_creds()) as c:
        await list_once(c)
        await list_once(c)  # the renewed token is cached
    assert issued == ["tok-old", "tok-new"]
    assert [s.headers["X-Auth-Token"] for s in ims.listing_requests()] == [
        "tok-old",
        "tok-new",
        "tok-new",
    ]


async def test_iam_token_renewed_once_then_gives_up(ims: ScriptedIms) -> None:
    issued: list[str] = []
    ims.handler = iam_and_listing(["tok-1", "tok-2", "tok-3"], set(), issued)
    sleeps = Sleeps()
    async with client(ims, sleeps, auth="token", credentials=iam_creds()) as c:
        with pytest.raises(AuthError) as raised:
            await list_once(c)
    assert issued == ["tok-1", "tok-2"]
    assert len(ims.listing_requests()) == 2
    assert raised.value.status == 401 and raised.value.code == "APIGW.0307"
    assert sleeps.calls == []
    for secret in ("tok-1", "tok-2", PASSWORD):
        assert secret not in str(raised.value)


async def test_iam_wrong_password_is_auth_error_without_retry(ims: ScriptedIms) -> None:
    ims.handler = queue(
        then=Answer(
            401,
            {
                "error": {
                    "code": 401,
                    "message": "The username or password is wrong.",
                    "title": "Unauthorized",
                }
            },
        )
    )
    async with client(ims, auth="token", credentials=iam_creds()) as c:
        with pytest.raises(AuthError) as raised:
            await list_once(c)
    assert len(ims.seen) == 1 and ims.seen[0].method == "POST"
    assert "IAM token request" in str(raised.value)
    assert PASSWORD not in str(raised.value)


# ---- retries --------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["3", "2.5", "http-date"])
async def test_429_is_retried_honouring_retry_after(ims: ScriptedIms, retry_after: str) -> None:
    if retry_after == "http-date":
        retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    throttled = gateway_error(429, "APIGW.0308", "throttled")
    throttled.headers["Retry-After"] = retry_after
    ims.handler = queue(throttled, Answer(200, PAGE))
    sleeps = Sleeps()
    async with client(ims, sleeps) as c:
        page = await list_once(c)
    assert page.images == PAGE["images"]
    assert len(ims.seen) == 2
    (delay,) = sleeps.calls
    if retry_after in ("3", "2.5"):
        assert delay == float(retry_after)
    else:
        assert 25 <= delay <= 30
    # each attempt is signed afresh and still verifies
    assert all(signer.signature_matches("GET", s.url, s.headers, s.body, AK, SK) for s in ims.seen)


async def test_retry_after_is_capped(ims: ScriptedIms) -> None:
    throttled = gateway_error(429, "APIGW.0308")
    throttled.headers["Retry-After"] = "86400"
    ims.handler = queue(throttled, Answer(200, PAGE))
    sleeps = Sleeps()
    async with client(ims, sleeps) as c:
        await list_once(c)
    assert sleeps.calls == [60.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried_with_full_jitter(ims: ScriptedIms, status: int) -> None:
    ims.handler = queue(
        ims_error(status, "IMG.0061"),
        ims_error(status, "IMG.0061"),
        ims_error(status, "IMG.0061"),
        Answer(200, PAGE),
    )
    sleeps = Sleeps()
    async with client(ims, sleeps) as c:
        await list_once(c)
    assert len(ims.seen) == 4
    assert len(sleeps.calls) == 3
    for n, delay in enumerate(sleeps.calls, start=1):
        assert 0 <= delay <= 0.5 * 2 ** (n - 1)


async def test_same_seed_same_delays(ims: ScriptedIms) -> None:
    delays = []
    for _ in range(2):
        ims.handler = queue(
            ims_error(503, "IMG.0061"), ims_error(503, "IMG.0061"), Answer(200, PAGE)
        )
        sleeps = Sleeps()
        async with client(ims, sleeps) as c:
            await list_once(c)
        delays.append(sleeps.calls)
    assert delays[0] == delays[1]


async def test_dropped_connection_is_retried(ims: ScriptedIms) -> None:
    # aiohttp itself re-sends an idempotent request once when the server disconnects; the
    # second drop is ours to retry (with backoff).
    ims.handler = queue(Answer(drop=True), Answer(drop=True), Answer(200, PAGE))
    sleeps = Sleeps()
    async with client(ims, sleeps) as c:
        page = await list_once(c)
    assert page.images == PAGE["images"] and len(ims.seen) == 3 and len(sleeps.calls) >= 1


async def test_body_cut_off_mid_response_is_retried(ims: ScriptedIms) -> None:
    big = {"images": [{"id": f"i{n}", "created_at": "2024-01-01T00:00:00Z"} for n in range(500)]}
    ims.handler = queue(Answer(200, big, truncate=True), Answer(200, PAGE))
    async with client(ims) as c:
        page = await list_once(c)
    assert page.images == PAGE["images"] and len(ims.seen) == 2


async def test_timeout_is_retried(ims: ScriptedIms) -> None:
    calls = 0

    async def handler(seen: Seen) -> Answer:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.wait_for(ims.release.wait(), 2.0)
        return Answer(200, PAGE)

    ims.handler = handler
    sleeps = Sleeps()
    async with client(ims, sleeps, request_timeout=0.2) as c:
        page = await list_once(c)
    assert page.images == PAGE["images"] and calls == 2 and len(sleeps.calls) == 1


async def test_unreachable_server_gives_up_after_max_attempts() -> None:
    async with ScriptedIms() as server:
        endpoint = server.endpoint
    sleeps = Sleeps()
    api = ApiSettings(endpoint=endpoint, auth="none", max_attempts=3, request_timeout=2.0)
    async with ImsClient(api, Credentials(), sleep=sleeps, rng=random.Random(1)) as c:
        with pytest.raises(ApiError) as raised:
            await list_once(c)
    assert raised.value.status is None
    assert "connection failed" in str(raised.value)
    assert "gave up after 3 attempts" in str(raised.value)
    assert len(sleeps.calls) == 2


@dataclass(frozen=True)
class SelfSigned:
    context: ssl.SSLContext  # the server's
    cert: Path  # its certificate (PEM): a CA bundle of one


@pytest.fixture
def self_signed(tmp_path: Path) -> SelfSigned:
    """A server TLS context with a certificate for 127.0.0.1 that nobody trusts."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return SelfSigned(context, cert)


async def test_untrusted_tls_certificate_is_refused_without_retry(
    self_signed: SelfSigned,
) -> None:
    sleeps = Sleeps()
    async with ScriptedIms(
        queue(then=Answer(200, PAGE)), ssl_context=self_signed.context
    ) as server:
        async with client(server, sleeps) as c:
            with pytest.raises(EndpointError) as raised:
                await list_once(c)
        assert server.seen == []  # verification stays on: nothing was sent
    assert sleeps.calls == [] and not raised.value.transient
    line = str(raised.value)
    assert "\n" not in line and line.startswith(f"partition {PARTITION}: ")
    assert "TLS certificate of 127.0.0.1 refused: self-signed certificate" in line
    assert "api.ca_file" in line


async def test_a_private_ca_is_trusted_with_ca_file(self_signed: SelfSigned) -> None:
    """The same server, its certificate given as api.ca_file: accepted, for IMS and IAM."""
    handler = queue(
        Answer(201, {"token": {}}, headers={"X-Subject-Token": "MIIprivateca" + "t" * 40}),
        then=Answer(200, PAGE),
    )
    async with ScriptedIms(handler, ssl_context=self_signed.context) as server:
        credentials = creds(domain="d", username="u", password=PASSWORD)
        c = client(server, auth="token", credentials=credentials, ca_file=str(self_signed.cert))
        async with c:
            page = await list_once(c)
        assert [s.path for s in server.seen] == [
            f"/iam/{REGION}/v3/auth/tokens",
            f"/{REGION}/v2/cloudimages",
        ]
    assert page.images == PAGE["images"]


async def test_a_ca_file_that_went_away_is_a_config_error(self_signed: SelfSigned) -> None:
    async with ScriptedIms() as server:
        api = settings(server, ca_file=str(self_signed.cert.with_name("gone.pem")))
        with pytest.raises(ConfigError, match=r"api\.ca_file .*gone\.pem.* cannot be used"):
            async with ImsClient(api, creds()):
                pass


async def test_gives_up_after_max_attempts_with_the_facts(ims: ScriptedIms) -> None:
    ims.handler = queue(then=ims_error(503, "IMG.0061", "The service is temporarily unavailable."))
    sleeps = Sleeps()
    async with client(ims, sleeps, max_attempts=3) as c:
        with pytest.raises(ApiError) as raised:
            await list_once(c)
    e = raised.value
    assert (e.status, e.code, e.request_id, e.region, e.partition) == (
        503,
        "IMG.0061",
        "req-3",
        REGION,
        PARTITION,
    )
    assert len(ims.seen) == 3 and len(sleeps.calls) == 2
    text = str(e)
    for fact in (
        PARTITION,
        "HTTP 503",
        "IMG.0061",
        "request id req-3",
        "gave up after 3 attempts",
        "temporarily unavailable",
    ):
        assert fact in text


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (gateway_error(401, "APIGW.0301", "Incorrect IAM authentication information"), AuthError),
        (gateway_error(401, "APIGW.0303", "signature expired"), AuthError),
        (gateway_error(403, "APIGW.0306", "forbidden"), AuthError),
        (ims_error(400, "IMG.0024", "The imagetype is invalid."), ApiError),
        (ims_error(404, "IMG.0031", "not found"), ApiError),
        (Answer(409, body=b"conflict"), ApiError),
    ],
)
async def test_auth_and_client_errors_are_never_retried(
    ims: ScriptedIms, answer: Answer, kind: type[ApiError]
) -> None:
    ims.handler = queue(then=answer)
    sleeps = Sleeps()
    async with client(ims, sleeps) as c:
        with pytest.raises(kind) as raised:
            await list_once(c)
    assert len(ims.seen) == 1 and sleeps.calls == []
    assert raised.value.status == answer.status
    assert not raised.value.transient


async def test_unknown_marker_is_raised_at_once(ims: ScriptedIms) -> None:
    ims.handler = queue(then=ims_error(400, "IMG.0066", "The image id is invalid."))
    async with client(ims) as c:
        with pytest.raises(ApiError) as raised:
            await list_once(c, [*QUERY, ("marker", "gone")])
    assert raised.value.code == "IMG.0066" and raised.value.status == 400
    assert len(ims.seen) == 1


async def test_ims_flow_control_code_is_retried_as_throttling(ims: ScriptedIms) -> None:
    ims.handler = queue(ims_error(400, "IMG.0060", "flow control exceeded"), Answer(200, PAGE))
    async with client(ims) as c:
        await list_once(c)
        assert c.concurrency_limit(REGION) == 2
    assert len(ims.seen) == 2


# ---- malformed answers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"images": [{"id": "a"', "not valid JSON"),
        (b"<html>oops</html>", "not valid JSON"),
        (b"[]", "is a list, not an object"),
        (b'{"servers": []}', "has no 'images' list"),
        (b'{"images": {"id": "a"}}', "has 'images' an object, not a list"),
        (b'{"images": [{"id": "a"}, 7]}', "images[1] a number, not an object"),
        (b'{"images": [], "page_info": []}', "'page_info' a list"),
        (b'{"images": [], "page_info": {"next_marker": 5}}', "next_marker a number"),
    ],
)
async def test_malformed_200_is_not_retried(ims: ScriptedIms, body: bytes, fragment: str) -> None:
    ims.handler = queue(then=Answer(200, body=body))
    sleeps = Sleeps()
    async with client(ims, sleeps) as c:
        with pytest.raises(MalformedResponse) as raised:
            await list_once(c)
    assert fragment in str(raised.value)
    assert PARTITION in str(raised.value) and "request id req-1" in str(raised.value)
    assert len(ims.seen) == 1 and sleeps.calls == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"images": ' + b"[" * 1000 + b"]" * 1000 + b"}", "images[0] a list"),
        (b'{"images": [], "page_info": ' + b"[" * 1000 + b"]" * 1000 + b"}", "'page_info' a list"),
        (
            b'{"images": [{"id": "a", "n": ' + b"[" * 1000 + b"]" * 1000 + b"}]}",
            "nested too deeply",
        ),
        (b'{"images": [{"id": "a", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}]}", "not valid JSON"),
    ],
    ids=["images", "page_info", "a field", "past every decoder"],
)
async def test_deeply_nested_answers_are_malformed(
    ims: ScriptedIms, body: bytes, fragment: str
) -> None:
    """Nested deeper than the decoders go: one line, not a RecursionError (found by
    tests/integration/test_api_fuzz.py; the pass failed as an "internal error")."""
    ims.handler = queue(then=Answer(200, body=body))
    async with client(ims) as c:
        with pytest.raises(MalformedResponse) as raised:
            await list_once(c)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


async def test_other_2xx_is_malformed(ims: ScriptedIms) -> None:
    ims.handler = queue(then=Answer(202, PAGE))
    async with client(ims) as c:
        with pytest.raises(MalformedResponse, match="only 200 is a page"):
            await list_once(c)


# ---- error facts and secrets ----------------------------------------------------------------


async def test_gateway_body_request_id_when_header_missing(ims: ScriptedIms) -> None:
    async def handler(seen: Seen) -> Answer:
        return Answer(
            404,
            {"error_code": "APIGW.0101", "error_msg": "no such API", "request_id": "body-rid"},
            headers={"X-Request-Id": ""},
        )

    ims.handler = handler
    async with client(ims) as c:
        with pytest.raises(ApiError) as raised:
            await list_once(c)
    assert (raised.value.code, raised.value.request_id) == ("APIGW.0101", "body-rid")
    assert "no such API" in str(raised.value)


async def test_non_json_error_body_gives_status_and_snippet(ims: ScriptedIms) -> None:
    ims.handler = queue(then=Answer(418, body=b"<h1>I am a teapot</h1>"))
    async with client(ims) as c:
        with pytest.raises(ApiError) as raised:
            await list_once(c)
    assert "418" in str(raised.value) and "teapot" in str(raised.value)


async def test_no_secret_in_errors_or_logs(
    ims: ScriptedIms, caplog: pytest.LogCaptureFixture
) -> None:
    # A gateway that echoes credentials back must not get them into our errors or logs.
    echo = f"AK {AK} with SK {SK} and token {TOKEN} / {PASSWORD} rejected"
    ims.handler = queue(
        gateway_error(503, "APIGW.0201", echo),
        Answer(drop=True),
        Answer(drop=True),
        then=gateway_error(401, "APIGW.0301", echo),
    )
    credentials = Credentials(ak=AK, sk=SK, token=TOKEN, password=PASSWORD, project_id=PROJECT)
    caplog.set_level(logging.DEBUG)
    async with client(ims, credentials=credentials) as c:
        with pytest.raises(AuthError) as raised:
            await list_once(c)
    assert len(caplog.records) >= 2
    texts = [str(raised.value), repr(raised.value), raised.value.message, caplog.text]
    texts += [repr(r.__dict__) for r in caplog.records]
    for text in texts:
        for secret in (AK, SK, TOKEN, PASSWORD, "Authorization", "SDK-HMAC-SHA256"):
            assert secret not in text
    assert "***" in str(raised.value)


@pytest.mark.parametrize(
    "answer",
    [
        # the snippet of a non-JSON body is its first 120 characters
        Answer(401, body=b"x" * 100 + f" Access={AK} rejected".encode()),
        Answer(401, body=b"x" * 105 + f" token {TOKEN}".encode()),
        # a message is cut at 300 characters
        gateway_error(401, "APIGW.0301", "y" * 280 + f" password {PASSWORD}"),
        ims_error(403, "IMG.0001", "z" * 290 + " token " + orjson.dumps(TOKEN).decode()),
        # collapsing whitespace must not hide a secret from redaction
        gateway_error(401, "APIGW.0301", f"tab\t{SK_WITH_SPACES} rejected"),
        # a secret as the gateway may echo it: URL-encoded, JSON-escaped
        Answer(401, body=f"ak={quote(SK_WITH_SPACES, safe='')}".encode()),
        gateway_error(401, "APIGW.0301", orjson.dumps(SK_WITH_SPACES).decode()),
    ],
)
async def test_no_piece_of_an_echoed_secret_survives_truncation(
    ims: ScriptedIms, answer: Answer
) -> None:
    """Redaction comes before cutting and collapsing: a message cut in the middle of a secret
    must not keep its first half."""
    ims.handler = queue(then=answer)
    credentials = Credentials(
        ak=AK, sk=SK_WITH_SPACES, token=TOKEN, password=PASSWORD, project_id=PROJECT
    )
    async with client(ims, credentials=credentials) as c:
        with pytest.raises(ApiError) as raised:
            await list_once(c)
    text = str(raised.value)
    for secret in (AK, SK_WITH_SPACES, TOKEN, PASSWORD):
        for piece in {secret[i : i + 8] for i in range(len(secret) - 7)}:
            assert piece not in text, (piece, text)


async def test_an_echoed_signature_is_masked(ims: ScriptedIms) -> None:
    async def echo(seen: Seen) -> Answer:
        return gateway_error(401, "APIGW.0301", f"bad: {seen.headers['Authorization']}")

    ims.handler = echo
    async with client(ims) as c:
        with pytest.raises(AuthError) as raised:
            await list_once(c)
    assert "Access=***" in str(raised.value) and "Signature=***" in str(raised.value)
    assert AK not in str(raised.value)


async def test_each_retry_logged_once_with_structured_fields(
    ims: ScriptedIms, caplog: pytest.LogCaptureFixture
) -> None:
    throttled = gateway_error(429, "APIGW.0308")
    throttled.headers["Retry-After"] = "1"
    ims.handler = queue(throttled, ims_error(500, "IMG.0061"), Answer(200, PAGE))
    caplog.set_level(logging.WARNING, logger="syncer.ims.client")
    async with client(ims) as c:
        await list_once(c)
    records = [r for r in caplog.records if r.name == "syncer.ims.client"]
    assert len(records) == 2
    assert all(r.levelno == logging.WARNING for r in records)
    facts = [(r.partition, r.region, r.attempt, r.status, r.code) for r in records]  # type: ignore[attr-defined]
    assert facts == [
        (PARTITION, REGION, 1, 429, "APIGW.0308"),
        (PARTITION, REGION, 2, 500, "IMG.0061"),
    ]
    assert records[0].retry_after == 1.0  # type: ignore[attr-defined]
    assert records[0].request_id == "req-1"  # type: ignore[attr-defined]


# ---- concurrency ----------------------------------------------------------------------------


def barrier_429(ims: ScriptedIms, burst: int) -> Any:
    """The first ``burst`` requests wait for each other, then all get 429; the rest succeed
    after a short pause (so concurrency is visible at the server)."""
    arrived = 0
    all_in = asyncio.Event()

    async def handler(seen: Seen) -> Answer:
        nonlocal arrived
        arrived += 1
        if arrived <= burst:
            if arrived == burst:
                all_in.set()
            await asyncio.wait_for(all_in.wait(), 5)
            answer = gateway_error(429, "APIGW.0308")
            answer.headers["Retry-After"] = "0"
            return answer
        await asyncio.sleep(0.02)
        return Answer(200, PAGE)

    return handler


async def test_adaptive_limit_halves_once_per_burst_of_429(ims: ScriptedIms) -> None:
    async with client(ims, region_concurrency=8, max_concurrency=16, increase_after=1000) as c:
        # A credential not yet proven good sends one request at a time: prove it first.
        ims.handler = queue(Answer(200, PAGE))
        await list_once(c)
        ims.handler = barrier_429(ims, 8)
        assert c.concurrency_limit(REGION) == 8
        await asyncio.gather(*(list_once(c) for _ in range(8)))
        assert c.concurrency_limit(REGION) == 4  # one halving for the burst, not eight
        ims.max_in_flight = 0
        await asyncio.gather(*(list_once(c) for _ in range(12)))
    assert ims.max_in_flight == 4


async def test_adaptive_limit_floor_and_growth_back_to_ceiling(ims: ScriptedIms) -> None:
    throttled = gateway_error(429, "APIGW.0308")
    throttled.headers["Retry-After"] = "0"
    ims.handler = queue(*[throttled] * 5, then=Answer(200, PAGE))
    async with client(ims, region_concurrency=4, increase_after=3, max_attempts=10) as c:
        await list_once(c)  # five 429s in a row: 4 → 2 → 1 → 1 → 1 → 1, then one success
        assert c.concurrency_limit(REGION) == 1
        await list_once(c)
        await list_once(c)
        assert c.concurrency_limit(REGION) == 2  # +1 after three successes
        for _ in range(20):
            await list_once(c)
        assert c.concurrency_limit(REGION) == 4  # never above the ceiling
        assert c.concurrency_limit("ap-southeast-1") == 4  # other endpoints untouched


async def test_global_cap_holds_across_regions(ims: ScriptedIms) -> None:
    async def handler(seen: Seen) -> Answer:
        await asyncio.sleep(0.03)
        return Answer(200, PAGE)

    ims.handler = handler
    regions = ["r-one", "r-two", "r-three"]
    async with client(ims, region_concurrency=3, max_concurrency=5) as c:
        await asyncio.gather(
            *(c.list_images(r, QUERY, partition=f"{r}/gold") for r in regions for _ in range(6))
        )
    assert ims.max_in_flight == 5
    assert max(ims.max_in_flight_by_prefix.values()) <= 3


# ---- lifetime -------------------------------------------------------------------------------


async def test_borrowed_session_is_left_open(ims: ScriptedIms) -> None:
    ims.handler = queue(then=Answer(200, PAGE))
    async with aiohttp.ClientSession() as session:
        async with ImsClient(settings(ims), creds(), session=session) as c:
            await list_once(c)
        assert not session.closed


async def test_use_without_opening_is_an_error(ims: ScriptedIms) -> None:
    c = ImsClient(settings(ims), creds())
    with pytest.raises(RuntimeError, match="not open"):
        await list_once(c)
    async with c:
        pass
    with pytest.raises(RuntimeError, match="not open"):
        await list_once(c)


# ---- the answer size cap ---------------------------------------------------------------------

MIB = 1 << 20


def big_page(size: int) -> bytes:
    """A valid page of about ``size`` bytes (one image with a long name)."""
    obj = {"id": "big", "created_at": "2024-01-01T00:00:00Z", "name": "n" * size}
    return orjson.dumps({"images": [obj], "page_info": {}})


def oversized() -> float:
    return REGISTRY.get_sample_value("syncer_ims_oversized_answers_total", {"region": REGION}) or 0


@pytest.mark.parametrize(
    ("answer", "how"),
    [
        (Answer(200, body=big_page(3 * MIB)), "answer of 3,145,8"),  # Content-Length
        (Answer(200, body=big_page(3 * MIB), chunked=True), "answer of more than 2,097,152 bytes"),
        # 3 MiB decoded from a few KiB on the wire: counted as decoded
        (Answer(200, body=big_page(3 * MIB), chunked=True, gzip=True), "more than 2,097,152"),
        (Answer(503, body=b"x" * 3 * MIB), "answer of 3,145,728 bytes (Content-Length)"),
    ],
)
async def test_an_answer_over_the_cap_fails_once_without_retry(
    ims: ScriptedIms, answer: Answer, how: str
) -> None:
    ims.handler = queue(answer, then=Answer(200, PAGE))
    sleeps = Sleeps()
    before = oversized()
    async with client(ims, sleeps, max_answer_bytes=2 * MIB) as c:
        with pytest.raises(AnswerTooLarge) as raised:
            await list_once(c)
        assert (await list_once(c)).images == PAGE["images"]  # the client carries on
    e = raised.value
    assert isinstance(e, MalformedResponse) and not e.transient
    assert len(ims.seen) == 2 and sleeps.calls == []  # not retried: it would not shrink
    assert (e.status, e.partition, e.request_id) == (answer.status, PARTITION, "req-1")
    line = str(e)
    assert "\n" not in line and how in line, line
    assert "exceeds api.max_answer_bytes (2,097,152)" in line
    assert oversized() == before + 1


async def test_an_answer_at_the_cap_is_read(ims: ScriptedIms) -> None:
    body = big_page(2 * MIB - 200)
    ims.handler = queue(Answer(200, body=body + b" " * (2 * MIB - len(body)), chunked=True))
    async with client(ims, max_answer_bytes=2 * MIB) as c:
        page = await list_once(c)
    assert len(page.images[0]["name"]) == 2 * MIB - 200
