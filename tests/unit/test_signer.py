"""SDK-HMAC-SHA256: the published test vector, and agreement with the official SDK's Signer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from hypothesis import given, settings
from hypothesis import strategies as st

from syncer.ims.signer import (
    canonical_query,
    canonical_uri,
    enc,
    parse_authorization,
    parse_query,
    sign,
    signature_matches,
)

AK = "AK1234567890"
SK = "SK0987654321"
VECTOR_URL = (
    "https://ims.cn-north-4.myhuaweicloud.com/v2/cloudimages"
    "?__imagetype=private&limit=2&marker=b5b9c0a2-0000-4000-8000-000000000001"
)
VECTOR_HEADERS = {
    "X-Sdk-Date": "20240102T030405Z",
    "Content-Type": "application/json",
    "X-Project-Id": "0123456789abcdef0123456789abcdef",
}
VECTOR_AUTH = (
    "SDK-HMAC-SHA256 Access=AK1234567890, "
    "SignedHeaders=content-type;host;x-project-id;x-sdk-date, "
    "Signature=8c21023ef39914195523def23ddc0f3f3b823377fe9fe24a5a5f7e574b4580d9"
)


def test_published_test_vector() -> None:
    headers = sign("GET", VECTOR_URL, VECTOR_HEADERS, b"", AK, SK)
    assert headers["Authorization"] == VECTOR_AUTH
    assert headers["Host"] == "ims.cn-north-4.myhuaweicloud.com"
    assert headers["X-Sdk-Date"] == "20240102T030405Z"


def test_sdk_date_argument_and_default() -> None:
    headers = {k: v for k, v in VECTOR_HEADERS.items() if k != "X-Sdk-Date"}
    signed = sign("GET", VECTOR_URL, headers, b"", AK, SK, sdk_date="20240102T030405Z")
    assert signed["Authorization"] == VECTOR_AUTH
    now = sign("GET", VECTOR_URL, headers, b"", AK, SK)
    t = datetime.strptime(now["X-Sdk-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - t) < timedelta(seconds=5)


def test_host_keeps_port_and_given_host_wins() -> None:
    signed = sign("GET", "http://127.0.0.1:8443/x", {"X-Sdk-Date": "20240102T030405Z"}, b"", AK, SK)
    assert signed["Host"] == "127.0.0.1:8443"
    given_host = {"X-Sdk-Date": "20240102T030405Z", "host": "example.com"}
    signed = sign("GET", "http://127.0.0.1:8443/x", given_host, b"", AK, SK)
    assert signed["host"] == "example.com" and "Host" not in signed


def test_encoding_helpers() -> None:
    assert enc("a b+c/d~e_f.g-h") == "a%20b%2Bc%2Fd~e_f.g-h"
    assert enc("ü") == "%C3%BC"
    assert canonical_query([("b", "2"), ("a", "z"), ("a", "y")]) == "a=y&a=z&b=2"
    assert canonical_query([("tag", "k=v"), ("created_at", "gte:2024-01-01 00:00:00")]) == (
        "created_at=gte%3A2024-01-01%2000%3A00%3A00&tag=k%3Dv"
    )
    assert parse_query("a=1&b&c=x%3Dy&&d=%2B+") == [
        ("a", "1"),
        ("b", ""),
        ("c", "x=y"),
        ("d", "++"),
    ]
    assert canonical_uri("/v2/cloudimages") == "/v2/cloudimages/"
    assert canonical_uri("/a%20b/") == "/a%20b/"


def test_parse_authorization() -> None:
    assert parse_authorization(VECTOR_AUTH) == (
        "AK1234567890",
        ["content-type", "host", "x-project-id", "x-sdk-date"],
        "8c21023ef39914195523def23ddc0f3f3b823377fe9fe24a5a5f7e574b4580d9",
    )
    assert parse_authorization("Bearer abc") is None
    assert parse_authorization("SDK-HMAC-SHA256 Access=, SignedHeaders=host, Signature=ab") is None
    assert (
        parse_authorization("SDK-HMAC-SHA256 Access=a, SignedHeaders=host, Signature=xyz") is None
    )


def test_signature_matches_accepts_and_rejects_tampering() -> None:
    headers = sign("GET", VECTOR_URL, VECTOR_HEADERS, b"", AK, SK)
    assert signature_matches("GET", VECTOR_URL, headers, b"", AK, SK)
    # header names arrive in any case
    lowered = {k.lower(): v for k, v in headers.items()}
    assert signature_matches("GET", VECTOR_URL, lowered, b"", AK, SK)
    assert not signature_matches(
        "GET", VECTOR_URL.replace("limit=2", "limit=3"), headers, b"", AK, SK
    )
    assert not signature_matches("GET", VECTOR_URL + "&x=1", headers, b"", AK, SK)
    assert not signature_matches("GET", VECTOR_URL.replace("/v2/", "/v3/"), headers, b"", AK, SK)
    assert not signature_matches("POST", VECTOR_URL, headers, b"", AK, SK)
    assert not signature_matches("GET", VECTOR_URL, headers, b"body", AK, SK)
    assert not signature_matches("GET", VECTOR_URL, headers, b"", AK, SK + "x")
    assert not signature_matches("GET", VECTOR_URL, headers, b"", "AK-other", SK)
    assert not signature_matches(
        "GET", VECTOR_URL, {**headers, "X-Project-Id": "other"}, b"", AK, SK
    )
    assert not signature_matches(
        "GET", VECTOR_URL, {**headers, "X-Sdk-Date": "20240102T030406Z"}, b"", AK, SK
    )
    missing = {k: v for k, v in headers.items() if k != "X-Project-Id"}
    assert not signature_matches("GET", VECTOR_URL, missing, b"", AK, SK)
    no_auth = {k: v for k, v in headers.items() if k != "Authorization"}
    assert not signature_matches("GET", VECTOR_URL, no_auth, b"", AK, SK)
    garbage = {**headers, "Authorization": "SDK-HMAC-SHA256 Access=ü, SignedHeaders=host"}
    assert not signature_matches("GET", VECTOR_URL, garbage, b"", AK, SK)


# ---- agreement with the SDK's own Signer over random requests ---------------------------------

_text = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc")),
    max_size=12,
)
_header_name = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_",
    min_size=1,
    max_size=12,
).filter(lambda n: n.lower() not in {"host", "x-sdk-date", "authorization", "content-type"})
_header_value = st.text(
    alphabet=st.characters(
        min_codepoint=0x20, max_codepoint=0x2FF, exclude_categories=("Cc", "Cs")
    ),
    max_size=20,
)


@st.composite
def _requests(draw: st.DrawFn) -> dict[str, object]:
    segments = draw(st.lists(_text, min_size=1, max_size=4))
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    pairs = draw(st.lists(st.tuples(_text, _text), max_size=6))
    names = draw(st.lists(_header_name, max_size=4, unique_by=lambda n: n.lower()))
    headers = {n: draw(_header_value) for n in names}
    headers["X-Sdk-Date"] = draw(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1))
    ).strftime("%Y%m%dT%H%M%SZ")
    content_type = draw(st.sampled_from([None, "application/json", "text/plain"]))
    if content_type:
        headers["Content-Type"] = content_type
    return {
        "method": draw(st.sampled_from(["GET", "POST", "put", "DELETE"])),
        "host": draw(st.sampled_from(["ims.cn-north-4.myhuaweicloud.com", "127.0.0.1:8443"])),
        "path": path,
        "pairs": pairs,
        "headers": headers,
        "body": draw(st.one_of(st.just(b""), st.binary(max_size=40))),
        "sk": draw(st.text(min_size=1, max_size=20)),
    }


@settings(max_examples=300, deadline=None)
@given(_requests())
def test_same_authorization_as_the_sdk_signer(req: dict[str, object]) -> None:
    method, host, path = str(req["method"]), str(req["host"]), str(req["path"])
    pairs = list(req["pairs"])  # type: ignore[call-overload]
    headers = dict(req["headers"])  # type: ignore[call-overload]
    body, sk = req["body"], str(req["sk"])
    assert isinstance(body, bytes)

    query = canonical_query(pairs)
    url = f"http://{host}{path}" + (f"?{query}" if query else "")
    ours = sign(method, url, headers, body, AK, sk)

    sdk_request = SdkRequest(
        method=method,
        schema="http",
        host=host,
        resource_path=path,
        query_params=list(pairs),
        header_params=dict(headers),
        body=body,
    )
    Signer(BasicCredentials(AK, sk)).sign(sdk_request)
    assert ours["Authorization"] == sdk_request.header_params["Authorization"]
    # the wire form: the SDK sends exactly the path and canonical query we send
    assert sdk_request.uri == path + (f"?{query}" if query else "")
    assert signature_matches(method, url, ours, body, AK, sk)
