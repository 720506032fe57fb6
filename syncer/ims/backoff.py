"""How long to wait before retrying a transient IMS failure.

Exponential backoff with *full jitter* (a uniform draw in ``[0, min(cap, base * 2**n))``), so
that many partitions throttled at the same moment do not come back at the same moment. A
``Retry-After`` from the server wins over the draw, capped so that a confused server cannot
park a pass for an hour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class Backoff:
    """Delays for retry number ``n`` (1 = the first retry)."""

    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number ``retry``.

        With a ``Retry-After`` the server's figure (capped at ``retry_after_cap``) is used as
        is; otherwise a full-jitter draw from ``[0, min(cap, base * 2**(retry-1))]``.
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap)
        ceiling = min(self.cap, self.base * 2.0 ** max(retry - 1, 0))
        return self.rng.uniform(0.0, ceiling)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds (``"3"``, ``"2.5"``) or an HTTP date.

    Returns None for a missing or unparseable value, 0.0 for a date in the past.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        # float() accepts "nan" and "inf": neither is a usable delay.
        return max(seconds, 0.0) if seconds == seconds and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)
