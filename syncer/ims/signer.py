"""SDK-HMAC-SHA256 request signing, byte-identical to huaweicloudsdkcore's ``Signer``.

Pure functions over strings and bytes: the client signs with :func:`sign`, the simulator
verifies with :func:`signature_matches`. The algorithm (see reference/ims-api-facts.md)::

    canonical_request = METHOD \\n canonical_uri \\n canonical_query \\n
                        canonical_headers \\n signed_headers \\n hex(sha256(body))
    string_to_sign    = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(sha256(canonical_request))
    signature         = hex(hmac_sha256(SK, string_to_sign))

Details copied from the SDK on purpose: query pairs are sorted *before* encoding; every header
whose name has no ``_`` is signed (so ``Host`` always is); header values are ``strip()``-ed; a
non-JSON ``Content-Type`` with a body adds ``X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD``; an empty
body hashes as the empty string.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
HEADER_DATE = "X-Sdk-Date"
HEADER_CONTENT = "X-Sdk-Content-Sha256"
EMPTY_HASH = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_AUTH_RE = re.compile(
    r"^SDK-HMAC-SHA256\s+Access=([^,\s]*),\s*SignedHeaders=([^,\s]*),\s*Signature=([0-9a-fA-F]*)\s*$"
)


def enc(s: str) -> str:
    """Percent-encode UTF-8, leaving only ``A-Z a-z 0-9 - _ . ~`` unescaped."""
    return quote(s, safe="~")


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Pairs sorted by (key, value) as given, then ``enc(k)=enc(v)`` joined by ``&``.

    This is exactly the query string to put on the wire (the SDK sends it the same way).
    """
    return "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params))


def parse_query(query: str) -> list[tuple[str, str]]:
    """A raw query string → decoded pairs (``%XX`` decoded; ``+`` stays a plus, as enc() never
    produces one). A part without ``=`` is a pair with an empty value."""
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def canonical_uri(path: str) -> str:
    """Each decoded path segment enc()'d, with a trailing ``/`` (for signing only)."""
    uri = "/".join(enc(segment) for segment in unquote(path or "/").split("/"))
    return uri if uri.endswith("/") else uri + "/"


def _get(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: list[str],
    body: bytes,
) -> str:
    values = {key.lower(): str(value).strip() for key, value in headers.items()}
    canonical_headers = "".join(f"{name}:{values.get(name, '')}\n" for name in signed_headers)
    if not body:
        payload_hash = EMPTY_HASH
    else:
        payload_hash = _get(headers, HEADER_CONTENT) or hashlib.sha256(body).hexdigest()
    return "\n".join(
        (
            method.upper(),
            canonical_uri(path),
            canonical_query(parse_query(query)),
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        )
    )


def _signature(canonical_request: str, sdk_date: str, sk: str) -> str:
    string_to_sign = "\n".join(
        (ALGORITHM, sdk_date, hashlib.sha256(canonical_request.encode()).hexdigest())
    )
    return hmac.new(sk.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    ak: str,
    sk: str,
    *,
    sdk_date: str | None = None,
) -> dict[str, str]:
    """The headers to send: ``headers`` + X-Sdk-Date (if absent: ``sdk_date`` or now, UTC) +
    Host (``host[:port]`` of ``url`` unless given) + Authorization. Values come back stripped."""
    if not ak or not sk:
        raise ValueError("AK and SK are both required to sign a request")
    parts = urlsplit(url)
    out = dict(headers)
    content_type = _get(out, "Content-Type")
    if content_type and not content_type.startswith(("application/json", "application/bson")):
        out[HEADER_CONTENT] = "UNSIGNED-PAYLOAD"
    date = _get(out, HEADER_DATE)
    if date is None:
        date = sdk_date or datetime.now(UTC).strftime(DATE_FORMAT)
        out[HEADER_DATE] = date
    # The SDK parses and re-formats the date; this also refuses a malformed one, as it does.
    t = datetime.strptime(date, DATE_FORMAT).strftime(DATE_FORMAT)
    if _get(out, "Host") is None:
        out["Host"] = parts.netloc.rpartition("@")[2]
    signed_headers = sorted(key.lower() for key in out if "_" not in key)
    request = _canonical_request(method, parts.path, parts.query, out, signed_headers, body)
    signature = _signature(request, t, sk)
    out = {key: str(value).strip() for key, value in out.items()}
    out["Authorization"] = (
        f"{ALGORITHM} Access={ak}, SignedHeaders={';'.join(signed_headers)}, Signature={signature}"
    )
    return out


def parse_authorization(value: str) -> tuple[str, list[str], str] | None:
    """``SDK-HMAC-SHA256 Access=…, SignedHeaders=a;b, Signature=hex`` → (access, headers, sig)."""
    match = _AUTH_RE.match(value.strip())
    if match is None:
        return None
    access, signed, signature = match.groups()
    names = [name for name in signed.split(";") if name]
    if not access or not names or not signature:
        return None
    return access, names, signature.lower()


def signature_matches(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    ak: str,
    sk: str,
) -> bool:
    """Server side: recompute the signature over the headers named in SignedHeaders (each must
    be present, ``host`` and ``x-sdk-date`` among them) and compare in constant time."""
    authorization = _get(headers, "Authorization")
    if authorization is None:
        return False
    parsed = parse_authorization(authorization)
    if parsed is None:
        return False
    access, signed_headers, signature = parsed
    present = {key.lower() for key in headers}
    if not {"host", "x-sdk-date"} <= set(signed_headers) or not set(signed_headers) <= present:
        return False
    date = _get(headers, HEADER_DATE)
    try:
        t = datetime.strptime(date or "", DATE_FORMAT).strftime(DATE_FORMAT)
    except ValueError:
        return False
    parts = urlsplit(url)
    request = _canonical_request(method, parts.path, parts.query, headers, signed_headers, body)
    expected = _signature(request, t, sk)
    return hmac.compare_digest(access.encode(), ak.encode()) & hmac.compare_digest(
        expected, signature
    )
