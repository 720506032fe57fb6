"""ImsClient: the process's one HTTP session to Huawei IMS (``GET /v2/cloudimages``).

What it does for every listing request (see docs/client.md):

* signs it (AK/SK ``SDK-HMAC-SHA256``), or sends a token (static, or obtained from IAM and
  renewed once on a 401), or nothing (``auth = "none"``), and sends exactly the query it signed;
* waits for a slot: an adaptive (AIMD) limit per region endpoint under a global cap;
* retries what is transient — 429, 5xx, connection failures and timeouts — with exponential
  backoff and full jitter, honouring ``Retry-After``, at most ``api.max_attempts`` attempts,
  one WARNING per retry;
* never retries 401/403 (the gateway locks an AK/SK after five failed authentications in a
  row) nor any other 4xx; 400 ``IMG.0066`` (unknown marker) is raised at once for the pager;
* lets a credential not yet proven good send ONE request at a time, and holds a rejected one
  back (no request sent) for a growing delay (``authgate.CredentialGate``);
* counts requests, retries, throttling and latency in ``syncer.metrics``;
* refuses an answer larger than ``api.max_answer_bytes`` (``AnswerTooLarge``, not retried);
* maps every failure to ``ApiError`` / ``AuthError`` / ``MalformedResponse`` carrying status,
  code, message, request id, region and partition, and never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from syncer import logs, metrics
from syncer.config import ApiSettings, Credentials, tls_context
from syncer.errors import ApiError, AuthError, ConfigError, MalformedResponse
from syncer.ims import signer
from syncer.ims.authgate import Admission, CredentialGate, CredentialHold
from syncer.ims.backoff import Backoff, parse_retry_after
from syncer.ims.concurrency import ConcurrencyGate, Ticket
from syncer.ims.wire import WireImage, decode_answer, decode_leniently

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

UNKNOWN_MARKER = "IMG.0066"
"""IMS's code for a marker that names no image (e.g. one deleted since the previous page)."""

# Throttling, whatever the status: the gateway's 429 code and IMS's "flow control exceeded".
THROTTLE_CODES = frozenset({"APIGW.0308", "IMG.0060"})
# 401 codes after which an IAM token is worth renewing (once).
RENEW_CODES = frozenset({"APIGW.0307", "APIGW.0301"})

# IAM tokens last 24 h; one older than this is renewed before use rather than after a 401.
TOKEN_MAX_AGE = 23 * 3600.0

_MAX_MESSAGE = 300
_MAX_REQUEST_ID = 128
_MAX_BODY_TEXT = 64 * 1024  # of a non-JSON error body, read for its snippet


class EndpointError(ApiError):
    """The endpoint cannot be used at all (bad URL, TLS certificate refused): not retried."""

    @property
    def transient(self) -> bool:
        return False


class AnswerTooLarge(MalformedResponse):
    """An answer larger than ``api.max_answer_bytes``: not retried (it would not shrink)."""


@dataclass(slots=True)
class ListPage:
    """One answer of ``GET /v2/cloudimages``."""

    images: list[WireImage]  # each object's bytes as sent (and its dict on demand)
    next_marker: str | None  # page_info.next_marker
    has_page_info: bool
    request_id: str | None
    server_time: datetime | None = None  # the answer's Date header: the API's clock


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes


class ImsClient:
    """Async context manager owning the process's ``aiohttp.ClientSession`` (or borrowing one).

    ``sleep`` and ``rng`` are injectable so that tests run backoff instantly and
    deterministically; ``increase_after`` is how many successes in a row grow an endpoint's
    concurrency limit by one.
    """

    def __init__(
        self,
        api: ApiSettings,
        credentials: Credentials | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
        increase_after: int = 8,
        token_max_age: float = TOKEN_MAX_AGE,
    ) -> None:
        self.api = api
        self._credentials = credentials or Credentials()
        self._session = session
        self._owns_session = session is None
        self._sleep = sleep
        self._backoff = backoff or Backoff(rng=rng or random.Random())
        self._gate = ConcurrencyGate(
            api.max_concurrency, api.region_concurrency, increase_after=increase_after
        )
        self._timeout = aiohttp.ClientTimeout(total=api.request_timeout)
        self._token_max_age = token_max_age
        self._issued_tokens: dict[str, tuple[str, float]] = {}  # region → (IAM token, obtained)
        self._every_token: set[str] = set()  # for redaction, even after renewal
        self._forms: list[str] = []  # every secret as it may be echoed, longest first
        self._forms_of: int | None = None  # len(_every_token) when _forms was made
        self._token_locks: dict[str, asyncio.Lock] = {}
        self._credential_gate = CredentialGate(api.auth_holdback, api.auth_holdback_max)

    # ---- lifetime ----------------------------------------------------------------------

    async def __aenter__(self) -> ImsClient:
        if self._session is None:
            try:  # verified always: the system's CA store, plus api.ca_file when given
                context = tls_context(self.api.ca_file)
            except OSError as e:  # ssl.SSLError included
                raise ConfigError(f"api.ca_file {self.api.ca_file!r} cannot be used: {e}") from None
            connector = aiohttp.TCPConnector(limit=self.api.max_concurrency, ssl=context)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False
            )
            self._owns_session = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client opened it (a borrowed one is left alone)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def concurrency_limit(self, region: str) -> int:
        """The current adaptive limit of ``region``'s endpoint (for metrics and tests)."""
        return self._gate.limit_for(self.api.url_for(region)).limit

    # ---- credentials the gateway rejected ----------------------------------------------

    def credential_holds(self) -> list[CredentialHold]:
        """Every credential rejected (401/403) and not accepted since, with its hold-back."""
        return self._credential_gate.holds()

    def credential_hold(self, region: str) -> CredentialHold | None:
        """The rejection that holds ``region``'s requests back, if any (for schedulers)."""
        if self.api.auth == "aksk":
            return self._credential_gate.hold_for("aksk")
        if self.api.auth == "token":
            return self._credential_gate.hold_for(
                f"token/{region}"
            ) or self._credential_gate.hold_for("iam")
        return None

    def credential_problem(self) -> str | None:
        """One line naming every rejected credential, why, and until when it is held back
        (None when every credential is fine or untried). Never contains a secret."""
        holds = self.credential_holds()
        return "; ".join(h.describe() for h in holds) if holds else None

    def _credential_of(self, region: str) -> tuple[str | None, str]:
        if self.api.auth == "aksk":
            return "aksk", "AK/SK"
        if self.api.auth == "token":
            return f"token/{region}", f"token for {region}"
        return None, ""

    def _admit(
        self, credential: tuple[str | None, str], region: str, partition: str | None
    ) -> contextlib.AbstractAsyncContextManager[Admission]:
        key, label = credential
        return self._credential_gate.admit(key, label, region=region, partition=partition)

    # ---- the one call ------------------------------------------------------------------

    async def list_images(
        self, region: str, query: Sequence[tuple[str, str]], *, partition: str
    ) -> ListPage:
        """``GET {endpoint}/v2/cloudimages?{query}`` → one page, after bounded retries."""
        base = self.api.url_for(region)
        query_string = signer.canonical_query(query)
        url = f"{base}?{query_string}" if query_string else base
        reply = await self._send_listing(region, url, partition=partition)
        request_id = self._request_id(reply, None)
        page = self._parse_page(reply.body, request_id, region=region, partition=partition)
        page.server_time = server_time(reply.headers.get("Date"))
        return page

    async def _send_listing(self, region: str, url: str, *, partition: str) -> _Reply:
        endpoint = self.api.url_for(region)
        credential = self._credential_of(region)
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            reply: _Reply | None = None
            async with self._admit(credential, region, partition) as admission:
                # the token is read once admitted: a renewal while we waited is used at once
                token = await self._token(region, partition) if self.api.auth == "token" else None
                try:
                    reply = await self._once(
                        "GET",
                        url,
                        functools.partial(self._listing_headers, region, url, token),
                        b"",
                        endpoint,
                        region=region,
                    )
                except ApiError as e:
                    error = self._tag(e, region, partition)
                else:
                    if reply.status == 200:
                        admission.accepted()
                        return reply
                    error = self._error_from(reply, region=region, partition=partition)
                if isinstance(error, AuthError) and error.status in (401, 403):
                    if not renewed and token is not None and self._may_renew(region, token, error):
                        admission.doubted()
                        renewed = True
                        attempt -= 1  # a renewal is not a retry of a transient failure
                        log.warning(
                            "IMS token rejected; renewing it once",
                            extra=_facts(
                                error, partition=partition, region=region, attempt=attempt
                            ),
                        )
                        continue
                    raise admission.rejected(error)
                if error.code is not None and error.code.startswith("IMG."):
                    admission.accepted()  # IMS itself answered: the gateway let us through
            await self._before_retry(error, attempt, reply, region, partition)

    # ---- one attempt -------------------------------------------------------------------

    async def _once(
        self,
        method: str,
        url: str,
        headers: Callable[[], dict[str, str]],
        body: bytes,
        endpoint: str | None,
        *,
        region: str,
        iam: bool = False,
    ) -> _Reply:
        """One HTTP exchange inside a concurrency slot. Connection failures → ApiError
        (status None); any HTTP answer → _Reply (throttling reported to the slot)."""
        session = self._require_session()
        async with self._gate.slot(endpoint) as ticket:
            began = time.monotonic()
            status: int | str = "error"
            try:
                async with session.request(
                    method,
                    URL(url, encoded=True),  # exactly the signed, sorted, encoded query
                    headers=headers(),  # signed here, after the wait for a slot
                    data=body or None,
                    allow_redirects=False,
                    timeout=self._timeout,
                ) as response:
                    raw = await self._read_capped(response, region)
                    reply = _Reply(response.status, response.reason or "", response.headers, raw)
                    status = reply.status
            except AnswerTooLarge as e:
                status = e.status or "error"
                raise
            except TimeoutError:
                status = "timeout"
                raise ApiError(
                    f"no complete answer within {self.api.request_timeout:g}s (timeout)"
                ) from None
            except aiohttp.InvalidURL:
                raise EndpointError("invalid URL for the IMS endpoint") from None
            except aiohttp.ClientConnectorCertificateError as e:
                reason = getattr(e.certificate_error, "verify_message", None) or _describe(
                    e.certificate_error
                )
                raise EndpointError(
                    f"TLS certificate of {URL(url).host} refused: {reason} (a private CA is "
                    "trusted with api.ca_file)"
                ) from None
            except aiohttp.ClientError as e:
                raise ApiError(f"connection failed: {_describe(e)}") from None
            finally:
                if iam:
                    metrics.observe_iam_request(region, status)
                else:
                    seconds = time.monotonic() - began if isinstance(status, int) else None
                    metrics.observe_request(region, status, seconds)
            if _report(ticket, reply):
                metrics.observe_throttled(region)
            return reply

    async def _read_capped(self, response: aiohttp.ClientResponse, region: str) -> bytes:
        """The whole body, unless it is larger than ``api.max_answer_bytes`` (as declared by
        Content-Length, or counted while reading, decompressed): then AnswerTooLarge, and the
        connection is closed rather than drained."""
        cap = self.api.max_answer_bytes
        declared = response.content_length
        size = 0
        if declared is None or declared <= cap:
            chunks: list[bytes] = []
            async for chunk in response.content.iter_any():
                size += len(chunk)
                if size > cap:
                    break
                chunks.append(chunk)
            else:
                return b"".join(chunks)
        response.close()
        metrics.observe_oversized_answer(region)
        how = (
            f"{declared:,} bytes (Content-Length)"
            if declared is not None and declared > cap
            else f"more than {cap:,} bytes ({size:,} read before giving up)"
        )
        request_id = response.headers.get("X-Request-Id")
        raise AnswerTooLarge(
            f"answer of {how} exceeds api.max_answer_bytes ({cap:,}); not retried: it would "
            "not shrink",
            status=response.status,
            request_id=self._clean(request_id, _MAX_REQUEST_ID) if request_id else None,
        )

    def _listing_headers(self, region: str, url: str, token: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        project_id = self._credentials.project_for(region, self.api)
        if project_id and self.api.auth != "none":
            headers["X-Project-Id"] = project_id
        if self.api.auth == "aksk":
            c = self._credentials
            if not c.ak or not c.sk:
                raise AuthError(
                    "api.auth is 'aksk' but HUAWEICLOUD_SDK_AK/HUAWEICLOUD_SDK_SK are not set",
                    region=region,
                )
            return signer.sign("GET", url, headers, b"", c.ak, c.sk)
        if token is not None:
            headers["X-Auth-Token"] = token
        return headers

    # ---- retries -----------------------------------------------------------------------

    async def _before_retry(
        self,
        error: ApiError,
        attempt: int,
        reply: _Reply | None,
        region: str,
        partition: str | None,
    ) -> None:
        """Raise ``error`` unless it is transient and attempts remain; else log and sleep."""
        if not _retryable(error):
            raise error
        if attempt >= self.api.max_attempts:
            if attempt > 1:
                raise _gave_up(error, attempt)
            raise error
        retry_after = None
        if reply is not None:
            retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        delay = self._backoff.delay(attempt, retry_after)
        extra = _facts(error, partition=partition, region=region, attempt=attempt)
        extra["delay"] = round(delay, 3)
        if retry_after is not None:
            extra["retry_after"] = retry_after
        log.warning("IMS request failed; retrying", extra=extra)
        metrics.observe_retry(region, _retry_reason(error))
        await self._sleep(delay)

    # ---- token auth --------------------------------------------------------------------

    async def _token(self, region: str, partition: str | None) -> str:
        c = self._credentials
        if c.token:
            return c.token
        cached = self._cached_token(region)
        if cached is not None:
            return cached
        lock = self._token_locks.setdefault(region, asyncio.Lock())
        async with lock:
            cached = self._cached_token(region)
            if cached is None:
                cached = await self._obtain_token(region, partition)
                self._every_token.add(cached)
                logs.redact_secrets((cached,))  # and from every log line of the process
                self._issued_tokens[region] = (cached, time.monotonic())
            return cached

    def _cached_token(self, region: str) -> str | None:
        entry = self._issued_tokens.get(region)
        if entry is None or time.monotonic() - entry[1] >= self._token_max_age:
            return None
        return entry[0]

    def _may_renew(self, region: str, token: str, error: AuthError) -> bool:
        """A 401 on an IAM-issued token: forget it (unless a renewal already replaced it)."""
        if self._credentials.token or error.status != 401:
            return False
        if error.code is not None and error.code not in RENEW_CODES:
            return False
        entry = self._issued_tokens.get(region)
        if entry is not None and entry[0] == token:
            del self._issued_tokens[region]
        return True

    async def _obtain_token(self, region: str, partition: str | None) -> str:
        """``POST {iam}/v3/auth/tokens`` (project-scoped password login) → X-Subject-Token."""
        c = self._credentials
        if not (c.username and c.password and c.domain):
            raise AuthError(
                "api.auth is 'token' but neither HUAWEICLOUD_SDK_TOKEN nor "
                "HUAWEICLOUD_SDK_DOMAIN_NAME/USERNAME/PASSWORD are set",
                region=region,
                partition=partition,
            )
        project_id = c.project_for(region, self.api)
        scope = {"id": project_id} if project_id else {"name": region}
        body = orjson.dumps(
            {
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": c.username,
                                "password": c.password,
                                "domain": {"name": c.domain},
                            }
                        },
                    },
                    "scope": {"project": scope},
                }
            }
        )
        url = self.api.iam_endpoint.replace("{region}", region).rstrip("/") + "/v3/auth/tokens"
        headers = {"Content-Type": "application/json;charset=UTF-8"}
        attempt = 0
        while True:
            attempt += 1
            reply: _Reply | None = None
            async with self._admit(("iam", "IAM password login"), region, partition) as admission:
                try:
                    reply = await self._once(
                        "POST", url, lambda: dict(headers), body, None, region=region, iam=True
                    )
                except ApiError as e:
                    error = self._tag(e, region, partition, prefix="IAM token request: ")
                else:
                    if reply.status == 201:
                        token = reply.headers.get("X-Subject-Token", "").strip()
                        if not token:
                            raise MalformedResponse(
                                "IAM answered 201 without an X-Subject-Token header",
                                status=201,
                                request_id=self._request_id(reply, None),
                                region=region,
                                partition=partition,
                            )
                        admission.accepted()
                        log.info("IAM token obtained", extra={"region": region})
                        return token
                    error = self._error_from(
                        reply, region=region, partition=partition, prefix="IAM token request: "
                    )
                if isinstance(error, AuthError) and error.status in (401, 403):
                    raise admission.rejected(error)
            await self._before_retry(error, attempt, reply, region, partition)

    # ---- answers → pages and errors ----------------------------------------------------

    def _parse_page(
        self, raw: bytes, request_id: str | None, *, region: str, partition: str
    ) -> ListPage:
        def bad(what: str) -> MalformedResponse:
            return MalformedResponse(
                f"200 answer {what}",
                status=200,
                request_id=request_id,
                region=region,
                partition=partition,
            )

        fast = decode_answer(raw)
        if fast is not None:
            images, page_info = fast
        else:  # refused: decode it the general way to say precisely what is wrong
            images, page_info = self._parse_slowly(raw, bad)
        next_marker: str | None = None
        if page_info is not None:
            if not isinstance(page_info, dict):
                raise bad(f"has 'page_info' {_json_kind(page_info)}, not an object")
            marker = page_info.get("next_marker")
            if marker is not None and not isinstance(marker, str):
                raise bad(f"has page_info.next_marker {_json_kind(marker)}, not a string")
            next_marker = marker or None
        return ListPage(images, next_marker, page_info is not None, request_id)

    @staticmethod
    def _parse_slowly(
        raw: bytes, bad: Callable[[str], MalformedResponse]
    ) -> tuple[list[WireImage], Any]:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            try:  # a value PostgreSQL cannot store (a lone surrogate) is no reason to fail
                doc = decode_leniently(raw)
            except (ValueError, RecursionError):
                raise bad(f"is not valid JSON ({e}; {len(raw)} bytes)") from None
        if not isinstance(doc, dict):
            raise bad(f"is {_json_kind(doc)}, not an object with an 'images' list")
        images = doc.get("images")
        if not isinstance(images, list):
            if "images" not in doc:
                raise bad("has no 'images' list")
            raise bad(f"has 'images' {_json_kind(images)}, not a list")
        wire = []
        for i, item in enumerate(images):
            if not isinstance(item, dict):
                raise bad(f"has images[{i}] {_json_kind(item)}, not an object")
            try:
                wire.append(WireImage.from_object(item))
            except (orjson.JSONEncodeError, RecursionError):
                raise bad(f"has images[{i}] nested too deeply to keep") from None
        return wire, doc.get("page_info")

    def _error_from(
        self, reply: _Reply, *, region: str, partition: str | None, prefix: str = ""
    ) -> ApiError:
        """An HTTP answer that is not the expected success → the matching ApiError."""
        code, message, body_request_id = _error_facts(reply.body)
        request_id = self._request_id(reply, body_request_id)
        if message is None:
            message = f"{reply.status} {reply.reason}".strip()
            snippet = self._clean(reply.body[:_MAX_BODY_TEXT].decode("utf-8", "replace"), 120)
            if snippet:
                message += f": {snippet}"
        message = prefix + self._clean(message, _MAX_MESSAGE)
        status = reply.status
        kind: type[ApiError] = ApiError
        if status in (401, 403):
            kind = AuthError
        elif 200 <= status < 300:
            kind = MalformedResponse
            message = f"{prefix}unexpected HTTP {status} (only 200 is a page)"
        return kind(
            message,
            status=status,
            code=self._clean(code, _MAX_MESSAGE) if code else None,
            request_id=request_id,
            region=region,
            partition=partition,
        )

    def _request_id(self, reply: _Reply, fallback: str | None) -> str | None:
        value = reply.headers.get("X-Request-Id") or fallback
        return self._clean(value, _MAX_REQUEST_ID) if value else None

    def _tag(
        self, error: ApiError, region: str, partition: str | None, prefix: str = ""
    ) -> ApiError:
        """A connection-level ApiError → the same with region/partition (and no secret)."""
        return type(error)(
            prefix + self._redact(error.message),
            status=error.status,
            code=error.code,
            request_id=error.request_id,
            region=region,
            partition=partition,
        )

    def _redact(self, text: str) -> str:
        """``text`` without any secret this client knows, as is or as a server may echo it
        (JSON-escaped, URL-encoded)."""
        if self._forms_of != len(self._every_token):
            c = self._credentials
            forms = set()
            for secret in (c.ak, c.sk, c.token, c.password, *self._every_token):
                if secret and len(secret) >= 4:
                    forms |= {
                        secret,
                        orjson.dumps(secret).decode()[1:-1],
                        quote(secret, safe=""),
                        quote_plus(secret),
                    }
            self._forms = sorted(forms, key=len, reverse=True)  # a longer one first
            self._forms_of = len(self._every_token)
        for form in self._forms:
            if form in text:
                text = text.replace(form, "***")
        return text

    def _clean(self, text: str, limit: int) -> str:
        """Server-provided text for an error: redacted FIRST — this client's secrets, then the
        log scrubber's (the process's secrets and secret-shaped text: a signature, a bearer
        token) — then on one line and cut (a cut or a collapsed space in the middle of a secret
        would hide it from redaction)."""
        return " ".join(logs.REDACTOR(self._redact(text)).split())[:limit]

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise RuntimeError("ImsClient is not open: use 'async with ImsClient(...)'")
        return self._session


# ---- helpers -------------------------------------------------------------------------------


def server_time(value: str | None) -> datetime | None:
    """An HTTP ``Date`` header as an aware datetime (None when absent or unparseable)."""
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _report(ticket: Ticket, reply: _Reply) -> bool:
    """Tell the concurrency slot how the answer went; True when it was throttling."""
    if reply.status == 429:
        ticket.throttled()
        return True
    if reply.status < 300:
        ticket.succeeded()
    elif reply.status < 500:
        code, _, _ = _error_facts(reply.body)
        if code in THROTTLE_CODES:
            ticket.throttled()
            return True
    return False


def _retry_reason(error: ApiError) -> str:
    if error.status is None:
        return "connection"
    if error.status == 429 or error.code in THROTTLE_CODES:
        return "throttled"
    return "server_error"


def _retryable(error: ApiError) -> bool:
    if isinstance(error, AuthError | MalformedResponse | EndpointError):
        return False
    if error.status is None:
        return True
    return error.status == 429 or error.status >= 500 or error.code in THROTTLE_CODES


def _gave_up(error: ApiError, attempts: int) -> ApiError:
    final = type(error)(
        f"{error.message} (gave up after {attempts} attempts)",
        status=error.status,
        code=error.code,
        request_id=error.request_id,
        region=error.region,
        partition=error.partition,
    )
    return final


def _facts(error: ApiError, **extra: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "status": error.status,
        "code": error.code,
        "request_id": error.request_id,
        "reason": error.message,
    }
    facts.update(extra)
    return facts


def _error_facts(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(code, message, request id) from an IMS body ``{"error": {"code", "message"}}`` or a
    gateway body ``{"error_code", "error_msg", "request_id"}``; Nones when neither."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(doc, dict):
        return None, None, None
    inner = doc.get("error")
    if isinstance(inner, dict):
        return _text(inner.get("code")), _text(inner.get("message")), _text(doc.get("request_id"))
    if "error_code" in doc or "error_msg" in doc:
        code, message = _text(doc.get("error_code")), _text(doc.get("error_msg"))
        return code, message, _text(doc.get("request_id"))
    return None, None, None


def _text(value: object) -> str | None:
    """A non-blank string as sent (ImsClient._clean redacts, collapses and cuts it)."""
    if isinstance(value, str) and value.strip():
        return value
    return None


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
