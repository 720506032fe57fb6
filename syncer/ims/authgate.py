"""Credentials the gateway rejects: at most ONE rejected request per credential and hold-back.

Huawei's API gateway locks an AK/SK for minutes after five failed authentications in a row, so
a wrong or revoked credential must not be tried by every partition at once, nor again at every
cycle. Each credential (``aksk`` — one for every region; ``token/<region>``; ``iam`` — the IAM
password login of token auth) has a state here:

* **unproven** (a fresh process, or after a rejection's hold-back has passed): ONE request with
  it may be in flight; the others wait for that request's outcome. An accepted answer proves
  the credential; an answer that says nothing about it (a timeout, a 5xx) lets the next waiter
  try;
* **proven**: requests go freely;
* **rejected** (a 401/403 that is not a token to renew): every waiting and later request with
  it fails at once, with no request sent, with the same one-line ``AuthError`` — until the
  hold-back has passed (``api.auth_holdback``, doubling after each rejection up to
  ``api.auth_holdback_max``). Then it is unproven again: one probe is let through; a success
  resets the hold-back.

Pure asyncio, no I/O: the client reports outcomes, this module only decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from syncer import metrics
from syncer.errors import AuthError

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class CredentialHold:
    """A rejected credential, held back until ``until`` (UTC)."""

    credential: str  # aksk | token/<region> | iam
    label: str  # for people: "AK/SK", "token for cn-north-4", ...
    status: int | None
    code: str | None
    message: str  # what the gateway said, scrubbed of secrets
    until: datetime
    holdback: float  # seconds of the current hold-back

    def describe(self, *, facts: bool = True) -> str:
        """One line: ``AK/SK rejected (HTTP 401, APIGW.0301): ...; held back for 1m until ...``."""
        known = [f"HTTP {self.status}"] if self.status is not None else []
        if self.code:
            known.append(self.code)
        what = f" ({', '.join(known)})" if facts and known else ""
        return (
            f"{self.label} rejected{what}: {self.message}; held back for "
            f"{_duration(self.holdback)} until {self.until:%Y-%m-%dT%H:%M:%SZ}"
        )


@dataclass
class _State:
    credential: str
    label: str
    proven: bool = False
    probing: bool = False
    generation: int = 0  # bumped by each rejection
    rejection: AuthError | None = None
    until: float = 0.0  # monotonic
    until_wall: float = 0.0
    holdback: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        self.wake.set()
        self.wake = asyncio.Event()


class Admission:
    """One request's pass through the gate; the client reports what the answer said."""

    def __init__(self, gate: CredentialGate, state: _State) -> None:
        self._gate, self._state, self._generation = gate, state, state.generation

    def accepted(self) -> None:
        """The answer proves the credential good (a page, an IMS error past the gateway)."""
        s = self._state
        if s.rejection is None and s.proven:
            return  # the common case: nothing changes
        if s.rejection is not None and self._generation != s.generation:
            return  # sent before a later rejection: that one stands
        if s.rejection is not None:
            log.warning("IMS credential accepted again", extra={"credential": s.credential})
            metrics.set_credential_hold(s.credential, None)
        s.proven, s.rejection, s.holdback = True, None, 0.0
        s.notify()

    def doubted(self) -> None:
        """A 401 on a token about to be renewed: the next request is a probe again."""
        if self._generation == self._state.generation:
            self._state.proven = False

    def rejected(self, error: AuthError) -> AuthError:
        """A 401/403: hold the credential back; returns the error to raise."""
        s, gate = self._state, self._gate
        metrics.observe_rejection(s.credential)
        if self._generation == s.generation:  # the first rejection of this round escalates
            s.generation += 1
            s.proven = False
            s.holdback = (
                gate.holdback if s.holdback <= 0 else min(2 * s.holdback, gate.holdback_max)
            )
            s.until = gate.clock() + s.holdback
            s.until_wall = time.time() + s.holdback
            s.rejection = error
            metrics.set_credential_hold(s.credential, s.until_wall)
            log.error(
                "IMS credential rejected; holding it back",
                extra={"credential": s.credential, "reason": gate.hold_of(s).describe()},
            )
            s.notify()
        elif s.rejection is None:
            return error  # sent before a rejection that a later success has cleared
        return gate.held_error(s, region=error.region, partition=error.partition)


class _Ungated(Admission):
    """Requests without a credential (``api.auth = "none"``): nothing to decide."""

    def __init__(self) -> None:
        pass

    def accepted(self) -> None:
        pass

    def doubted(self) -> None:
        pass

    def rejected(self, error: AuthError) -> AuthError:
        return error


class CredentialGate:
    """The states of every credential one ImsClient uses."""

    def __init__(
        self, holdback: float = 60.0, holdback_max: float = 1800.0, *, clock: Clock = time.monotonic
    ) -> None:
        self.holdback = holdback
        self.holdback_max = max(holdback_max, holdback)
        self.clock = clock
        self._states: dict[str, _State] = {}

    def _state(self, credential: str, label: str) -> _State:
        state = self._states.get(credential)
        if state is None:
            state = self._states[credential] = _State(credential, label)
        return state

    @contextlib.asynccontextmanager
    async def admit(
        self, credential: str | None, label: str, *, region: str | None, partition: str | None
    ) -> AsyncIterator[Admission]:
        """Wait until a request with ``credential`` may be sent; raises the held ``AuthError``
        (nothing sent) while the credential is held back. ``None``: no credential, no wait."""
        if credential is None:
            yield _Ungated()
            return
        s = self._state(credential, label)
        while True:
            if s.rejection is not None and self.clock() < s.until:
                raise self.held_error(s, region=region, partition=partition)
            if s.proven:
                probe = False
                break
            if not s.probing:
                probe = s.probing = True
                break
            await s.wake.wait()
        try:
            yield Admission(self, s)
        finally:
            if probe:
                s.probing = False
                s.notify()

    def held_error(self, s: _State, *, region: str | None, partition: str | None) -> AuthError:
        rejection = s.rejection
        assert rejection is not None
        return AuthError(
            self.hold_of(s).describe(facts=False),
            status=rejection.status,
            code=rejection.code,
            request_id=rejection.request_id,
            region=region,
            partition=partition,
        )

    def hold_of(self, s: _State) -> CredentialHold:
        rejection = s.rejection
        assert rejection is not None
        return CredentialHold(
            s.credential,
            s.label,
            rejection.status,
            rejection.code,
            rejection.message,
            datetime.fromtimestamp(s.until_wall, UTC).replace(microsecond=0),
            s.holdback,
        )

    def holds(self) -> list[CredentialHold]:
        """The credentials rejected and not accepted since (including those whose hold-back has
        passed but whose probe has not answered yet)."""
        return [self.hold_of(s) for s in self._states.values() if s.rejection is not None]

    def hold_for(self, credential: str) -> CredentialHold | None:
        s = self._states.get(credential)
        return None if s is None or s.rejection is None else self.hold_of(s)


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
