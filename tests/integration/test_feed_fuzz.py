"""Fuzzing what feed consumers can send (hypothesis): random strings and bytes in every
parameter, header and path, random and tampered cursors, random bodies. Every answer is a 200,
or a 400/401/404/405/410 (413 for a body too large) with one line of JSON; never a 500, never a
traceback; and the server goes on serving. The table of known hostile values is in
test_feed_http.py; these are the values nobody thought of. Examples: ``SYNCER_FUZZ_EXAMPLES``.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from yarl import URL

from syncer.records import digest_page
from syncer.store.passes import partition_pass
from syncer.store.pool import open_pool
from tests.budget import FUZZ, FUZZ_EXAMPLES
from tests.feed_helpers import Served, get_json, serve

TOKEN = "fuzz-token-0123456789"
ALLOWED = {200, 400, 401, 404, 405, 410, 413}
PARAMS = ["since", "limit", "wait", "region", "image_type", "kind", "image_id", "status", "after"]
ROUTES = [
    "/v1/events",
    "/v1/events/stream",
    "/v1/images",
    "/v1/consumers",
    "/v1/consumers/{name}",
    "/v1/{name}",
]


@pytest.fixture
async def served(db: str) -> AsyncIterator[Served]:
    """The feed, with a token, over a database holding real events (written by the sync's page
    writer, so the log still replays at the end)."""
    pool = await open_pool(db, size=2, server_settings={"jit": "off"})
    try:
        async with partition_pass(pool, "cn-north-4", "private", "full") as p:
            images = [
                {"id": f"img-{n}", "status": "active", "created_at": "2024-01-01T00:00:00Z"}
                for n in range(5)
            ]
            await p.apply_page(digest_page(images))
    finally:
        await pool.close()
    async with serve(db, token=TOKEN) as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def text() -> st.SearchStrategy[str]:
    """Any text (NUL, surrogates' neighbours, RTL marks, huge digits…), or something close to a
    value the feed accepts."""
    near = st.sampled_from(
        ["0", "now", "1", "1000", "1001", "-1", "60", "60.001", "0.0001", "1e3", "created",
         "cn-north-4", "gold", "x" * 5000, "%", "\u202e", "٣", "1,2", ",", ""]
    )  # fmt: skip
    return st.one_of(
        near, st.text(max_size=60), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))
    )


def cursors(real: list[str]) -> st.SearchStrategy[str]:
    """Cursors: the server's own (``real``), tampered ones (a byte flipped, another seq or tag
    under the server's epoch: 410 or 400), and random ones of the right length or any."""
    layout = struct.Struct(">B7sQ8s")
    fields = [layout.unpack(base64.urlsafe_b64decode(c)) for c in real]

    def pack(v: int, epoch: bytes, seq: int, tag: bytes) -> str:
        return base64.urlsafe_b64encode(layout.pack(v, epoch, seq, tag)).decode()

    def flip(cursor: str, at: int, bit: int) -> str:
        raw = bytearray(base64.urlsafe_b64decode(cursor))
        raw[at % len(raw)] ^= 1 << bit
        return base64.urlsafe_b64encode(bytes(raw)).decode()

    own = st.sampled_from(real)
    return st.one_of(
        own,
        st.builds(flip, own, st.integers(0, 23), st.integers(0, 7)),
        st.builds(
            lambda f, seq, tag: pack(f[0], f[1], seq, tag),
            st.sampled_from(fields),
            st.integers(0, 2**64 - 1) | st.integers(0, 10),
            st.binary(min_size=8, max_size=8),
        ),
        st.builds(
            pack,
            st.sampled_from([1, 0, 2, 255]),
            st.binary(min_size=7, max_size=7),
            st.integers(0, 2**64 - 1),
            st.binary(min_size=8, max_size=8),
        ),
        st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    )


def header_value() -> st.SearchStrategy[str]:
    """What a client can put in a header: printable Latin-1 (no CR, LF or NUL)."""
    return st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=80,
    )


@st.composite
def requests(draw: st.DrawFn, real: list[str]) -> dict[str, Any]:
    route = draw(st.sampled_from(ROUTES))
    name = draw(st.one_of(st.text(max_size=30), st.sampled_from(["billing", "a" * 200, ".x"])))
    path = route.replace("{name}", quote(name, safe="") or "x")
    method = draw(st.sampled_from(["GET", "GET", "GET", "PUT", "DELETE", "POST", "HEAD"]))
    keys = st.one_of(st.sampled_from(PARAMS), st.sampled_from(PARAMS), st.text(max_size=12))
    values = st.one_of(text(), cursors(real))
    query = draw(st.lists(st.tuples(keys, values), max_size=4))
    if draw(st.integers(0, 9)) < 7:  # mostly let through, to reach the handlers
        auth: str | None = f"Bearer {TOKEN}"
    else:
        auth = draw(
            st.one_of(
                st.sampled_from([None, f"bearer {TOKEN}", f"Bearer {TOKEN} ", "Basic eDp5"]),
                header_value(),
                header_value().map(lambda v: "Bearer " + v),
            )
        )
    headers = {} if auth is None else {"Authorization": auth}
    if draw(st.booleans()):
        headers["Last-Event-ID"] = draw(st.one_of(cursors(real), header_value()))
    for key, value in draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["Accept", "Accept-Encoding", "X-Forwarded-For", "Cookie", "Range"]
                ),
                header_value(),
            ),
            max_size=2,
        )
    ):
        headers[key] = value
    body = draw(
        st.one_of(
            st.none(),
            st.binary(max_size=200),
            st.builds(lambda c: orjson.dumps({"cursor": c}), st.one_of(cursors(real), text())),
            st.recursive(
                st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3)
                ),
                max_leaves=6,
            ).map(orjson.dumps),
        )
    )
    return {
        "method": method,
        "route": route,
        "path": path,
        "query": query,
        "headers": headers,
        "body": body,
    }


def url_of(base: str, path: str, query: list[tuple[str, str]]) -> URL:
    qs = "&".join(
        f"{quote(k, safe='')}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}"
        for k, v in query
    )
    return URL(f"{base}{path}" + (f"?{qs}" if qs else ""), encoded=True)


async def send(http: aiohttp.ClientSession, base: str, r: dict[str, Any]) -> tuple[int, bytes, str]:
    url = url_of(base, r["path"], r["query"])
    async with http.request(
        r["method"], url, headers=r["headers"], data=r["body"], allow_redirects=False
    ) as resp:
        if resp.status == 200 and resp.content_type == "text/event-stream":
            return resp.status, await resp.content.read(64), resp.content_type
        return resp.status, await resp.read(), resp.content_type


@FUZZ
@pytest.mark.timeout(120 + FUZZ_EXAMPLES)
@given(data=st.data())
async def test_fuzz_any_request_is_answered_and_never_500(
    served: Served, http: aiohttp.ClientSession, data: st.DataObject
) -> None:
    status, page = await get_json(
        http, served.url + "/v1/events", since="0", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    real = [e["cursor"] for e in page["events"]]
    for r in data.draw(st.lists(requests(real), min_size=1, max_size=4), label="requests"):
        status, body, content_type = await send(http, served.url, r)
        event(f"{r['method']} {r['route']}: {status}")  # see --hypothesis-show-statistics
        assert status in ALLOWED, (status, body[:300], r)
        assert b"Traceback" not in body and b'File "' not in body, r
        if r["method"] == "HEAD" or content_type == "text/event-stream":
            continue
        if status != 200 or r["path"] != "/v1/events/stream":
            assert content_type == "application/json", (status, content_type, r)
            doc = orjson.loads(body)
            if status != 200:
                assert isinstance(doc["error"], str) and doc["status"] == status, doc
                assert b"\n" not in body.strip() and len(doc["error"]) < 400, doc
    # still serving, and serving right
    async with http.get(served.url.replace("/v1", "") + "/healthz") as resp:
        assert resp.status == 200
    status, page = await get_json(
        http, served.url + "/v1/events", since="0", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200 and [e["image_id"] for e in page["events"]] == [
        f"img-{n}" for n in range(5)
    ]
