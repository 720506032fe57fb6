"""One exception root for everything syncer raises on purpose.

Errors carry facts (status, error code, request id, partition) as attributes; `str(error)` is a
single line a person can act on. Secrets never go into an error.
"""

from __future__ import annotations


class SyncerError(Exception):
    """Root of every error syncer raises deliberately."""


class ConfigError(SyncerError):
    """The configuration file or environment is unusable."""


class DatabaseError(SyncerError):
    """PostgreSQL could not be reached or refused what we asked."""


class MigrationError(DatabaseError):
    """The schema could not be brought to the newest revision."""


class EmbeddedServerError(DatabaseError):
    """The private PostgreSQL (`syncer demo`, tests) could not start: says why and what to do."""


class ApiError(SyncerError):
    """IMS (or its API gateway) answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        region: str | None = None,
        partition: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.region = region
        self.partition = partition
        super().__init__(self._line())

    def _line(self) -> str:
        facts = []
        if self.partition:
            facts.append(f"partition {self.partition}")
        elif self.region:
            facts.append(f"region {self.region}")
        if self.status is not None:
            facts.append(f"HTTP {self.status}")
        if self.code:
            facts.append(self.code)
        if self.request_id:
            facts.append(f"request id {self.request_id}")
        prefix = f"{', '.join(facts)}: " if facts else ""
        return f"{prefix}{self.message}"

    @property
    def transient(self) -> bool:
        """Worth retrying: throttling, server errors and lost connections (status None)."""
        return self.status is None or self.status == 429 or self.status >= 500


class AuthError(ApiError):
    """401/403: never retried (the gateway locks an AK/SK after five failures in a row)."""

    @property
    def transient(self) -> bool:
        return False


class MalformedResponse(ApiError):
    """The API answered 200 with something that is not a usable page."""

    @property
    def transient(self) -> bool:
        return False


class PagingError(SyncerError):
    """A listing could not be completed correctly (stuck marker, repeated id, vanished marker)."""

    def __init__(self, message: str, *, partition: str | None = None) -> None:
        self.partition = partition
        super().__init__(f"partition {partition}: {message}" if partition else message)
