"""The API gateway's authentication, and IAM's token issuance, as the simulator plays them.

* ``aksk``: ``Authorization: SDK-HMAC-SHA256 ...`` verified exactly (syncer.ims.signer), with an
  ``X-Sdk-Date`` within 15 minutes of the simulator's wall clock. More than ``lockout_after``
  failed signatures in a row lock the AK for ``lockout_seconds``, as the gateway does.
* ``token``: ``X-Auth-Token`` must be the configured token or one issued by
  ``POST /v3/auth/tokens`` and not expired (24 h).
* ``none``: anything goes.

Failures are gateway bodies: 401 ``APIGW.0301`` (bad IAM authentication: missing, unknown or
wrong credentials, bad signature, locked AK), 401 ``APIGW.0303`` (signature expired: date skew),
401 ``APIGW.0307`` (token expired, must be renewed).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from syncer.ims.signer import DATE_FORMAT, parse_authorization, signature_matches

AuthMode = Literal["aksk", "token", "none"]
AUTH_MODES: Final = ("aksk", "token", "none")
MAX_SKEW: Final = 15 * 60
TOKEN_LIFETIME: Final = 24 * 3600


@dataclass(frozen=True, slots=True)
class AuthFailure:
    status: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    issued_at: float
    expires_at: float
    user: str
    domain: str
    project_id: str
    project_name: str


_EXPIRED: Final = "signature expired (X-Sdk-Date is more than 15 minutes off)"


def _iam_denied(detail: str) -> AuthFailure:
    return AuthFailure(401, "APIGW.0301", f"Incorrect IAM authentication information: {detail}")


class IamError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


class Gatekeeper:
    """Checks each API request; issues IAM tokens."""

    def __init__(
        self,
        mode: AuthMode,
        *,
        ak: str = "",
        sk: str = "",
        token: str = "",
        iam_users: Mapping[str, str] | None = None,
        project_id: str = "",
        lockout_after: int | None = 5,
        lockout_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in AUTH_MODES:
            raise ValueError(f"unknown auth mode {mode!r} (aksk, token or none)")
        if mode == "aksk" and not (ak and sk):
            raise ValueError("auth 'aksk' needs an AK and an SK")
        self.mode = mode
        self.ak = ak
        self.sk = sk
        self.token = token
        self.iam_users = dict(iam_users or {})
        self.project_id = project_id
        self.lockout_after = lockout_after
        self.lockout_seconds = lockout_seconds
        self.clock = clock
        self.tokens: dict[str, IssuedToken] = {}
        self._failures = 0
        self._locked_until = 0.0

    # ---- API requests ------------------------------------------------------------------

    def check(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> AuthFailure | None:
        if self.mode == "none":
            return None
        if self.mode == "token":
            return self._check_token(headers)
        return self._check_aksk(method, url, headers, body)

    def _check_token(self, headers: Mapping[str, str]) -> AuthFailure | None:
        value = headers.get("X-Auth-Token")
        if not value:
            return _iam_denied("no X-Auth-Token header")
        if self.token and secrets.compare_digest(value.encode(), self.token.encode()):
            return None
        issued = self.tokens.get(value)
        if issued is None:
            return _iam_denied("token is invalid")
        if issued.expires_at <= self.clock():
            return AuthFailure(401, "APIGW.0307", "The token must be updated.")
        return None

    def _check_aksk(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> AuthFailure | None:
        authorization = headers.get("Authorization")
        parsed = parse_authorization(authorization) if authorization else None
        if parsed is None:
            return _iam_denied("no valid SDK-HMAC-SHA256 Authorization header")
        if parsed[0] != self.ak:
            return _iam_denied("unknown access key")
        now = self.clock()
        if now < self._locked_until:
            return _iam_denied("the access key is locked after repeated failures")
        date = headers.get("X-Sdk-Date", "")
        try:
            signed_at = datetime.strptime(date, DATE_FORMAT).replace(tzinfo=UTC).timestamp()
        except ValueError:
            return self._failed(_iam_denied("bad or missing X-Sdk-Date"))
        if abs(now - signed_at) > MAX_SKEW:
            return self._failed(
                AuthFailure(
                    401, "APIGW.0303", "Incorrect app authentication information: " + _EXPIRED
                )
            )
        if not signature_matches(method, url, headers, body, self.ak, self.sk):
            return self._failed(_iam_denied("verify aksk signature fail"))
        self._failures = 0
        return None

    def _failed(self, failure: AuthFailure) -> AuthFailure:
        self._failures += 1
        if self.lockout_after is not None and self._failures > self.lockout_after:
            self._locked_until = self.clock() + self.lockout_seconds
            self._failures = 0
        return failure

    # ---- IAM ---------------------------------------------------------------------------

    def issue_token(self, body: Any, *, region: str | None) -> IssuedToken:
        """A project-scoped password login → a token (raises :class:`IamError`)."""
        try:
            identity = body["auth"]["identity"]
            methods = identity["methods"]
            user = identity["password"]["user"]
            name, password = str(user["name"]), str(user["password"])
            domain_obj = user.get("domain") or {}
            domain = str(domain_obj.get("name") or domain_obj.get("id") or "")
            scope = body["auth"].get("scope") or {}
            project = scope.get("project")
        except (KeyError, TypeError, AttributeError):
            raise IamError(
                400, "The request body is invalid: a password identity is required."
            ) from None
        if not isinstance(methods, list) or "password" not in methods:
            raise IamError(400, "The request body is invalid: methods must include password.")
        if not isinstance(project, dict) or not (project.get("id") or project.get("name")):
            raise IamError(400, "The request body is invalid: a project scope is required.")
        expected = self.iam_users.get(f"{domain}/{name}", self.iam_users.get(name))
        if expected is None or not secrets.compare_digest(expected.encode(), password.encode()):
            raise IamError(401, "The username or password is wrong.")
        project_name = str(project.get("name") or region or "")
        project_id = str(project.get("id") or self.project_id)
        now = self.clock()
        issued = IssuedToken(
            token="MIIsim" + secrets.token_urlsafe(48),
            issued_at=now,
            expires_at=now + TOKEN_LIFETIME,
            user=name,
            domain=domain,
            project_id=project_id,
            project_name=project_name,
        )
        self.tokens[issued.token] = issued
        return issued

    @staticmethod
    def token_body(issued: IssuedToken) -> dict[str, Any]:
        return {
            "token": {
                "methods": ["password"],
                "issued_at": _iso(issued.issued_at),
                "expires_at": _iso(issued.expires_at),
                "user": {
                    "name": issued.user,
                    "id": secrets.token_hex(16),
                    "domain": {"name": issued.domain, "id": secrets.token_hex(16)},
                },
                "project": {
                    "id": issued.project_id,
                    "name": issued.project_name,
                    "domain": {"name": issued.domain},
                },
                "catalog": [],
                "roles": [{"name": "te_admin", "id": "0"}],
            }
        }
