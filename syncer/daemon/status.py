"""What the status page reads (``GET /v1/status``): every configured partition's freshness, its
last passes and its live images, judged exactly as ``syncer status`` judges them.

Read on the daemon's control pool, at most once per ``ttl`` seconds (concurrent requests share
one read and its answer), and bounded in time, so that a page left open in many browsers costs
the database one small read every few seconds and never holds up heartbeats or leases.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from syncer.config import Settings
from syncer.errors import DatabaseError
from syncer.freshness import EXIT_OK, exit_status, health_json, judge
from syncer.store.pool import SESSION_ERRORS, describe_session_error
from syncer.store.status import partition_records
from syncer.sync.partitions import plan_partitions

TTL = 2.0  # seconds an answer is reused
TIMEOUT = 5.0  # seconds one read may take


class StatusReport:
    def __init__(self, settings: Settings, worker: str, *, ttl: float = TTL) -> None:
        self.settings = settings
        self.worker = worker
        self.ttl = ttl
        self.configured = [(p.region, p.image_type) for p in plan_partitions(settings)]
        self._answer: tuple[float, dict[str, Any]] | None = None
        self._reading: asyncio.Task[dict[str, Any]] | None = None

    async def read(self, pool: asyncpg.Pool) -> dict[str, Any]:
        """The status document; DatabaseError (one line) when the database does not answer."""
        now = time.monotonic()
        if self._answer is not None and now - self._answer[0] < self.ttl:
            return self._answer[1]
        if self._reading is None or self._reading.done():
            self._reading = asyncio.create_task(self._read(pool), name="status-report")
        # shielded: a client that goes away does not cancel the read the others wait for
        doc = await asyncio.shield(self._reading)
        self._answer = (time.monotonic(), doc)
        return doc

    async def _read(self, pool: asyncpg.Pool) -> dict[str, Any]:
        try:
            records = await asyncio.wait_for(partition_records(pool), TIMEOUT)
        except SESSION_ERRORS as e:
            raise DatabaseError(f"status: {describe_session_error(e)}") from e
        s = self.settings.sync
        stale_after = 2 * s.full_interval
        now = datetime.now(UTC)
        health = judge(records, self.configured, stale_after=stale_after, now=now)
        code = exit_status(health)
        return {
            "generated_at": now,
            "worker": self.worker,
            "ok": code == EXIT_OK,
            "exit_status": code,
            "stale_after_seconds": stale_after,
            "full_interval_seconds": s.full_interval,
            "delta_interval_seconds": s.delta_interval,
            "regions": list(dict.fromkeys(r for r, _ in self.configured)),
            "image_types": list(dict.fromkeys(t for _, t in self.configured)),
            "live_images": sum(r.live for r in records),
            "partitions": [health_json(h) for h in health],
        }
