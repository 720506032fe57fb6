"""The event log replays to the state: `syncer verify`, and the check every test ends with.

``ims.image_events``, folded in ``seq`` order from the oldest retained event, must find exactly
``ims.image_rows``: each image's status and liveness, and every field an event names. Two
set-based statements in one REPEATABLE READ snapshot (``verify.sql``), so it runs beside live
writers — a page's rows and its events commit together — and costs a few seconds per million
images. What exactly is checked, and what retention and tombstones leave undetermined, is
written above ``verify_replay`` in ``verify.sql``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from syncer.errors import DatabaseError
from syncer.store.pool import SESSION_ERRORS, describe_session_error, pool_session
from syncer.store.queries import sql
from syncer.store.status import ensure_schema

#: Differences listed by default (the total is always counted).
SHOWN = 10

# A read-only check of the whole log: no statement timeout.
_SESSION = {"application_name": "syncer-verify"}


@dataclass(frozen=True, slots=True)
class Difference:
    region: str
    image_id: str
    seq: int | None  # the event it is about, if any
    problem: str

    def __str__(self) -> str:
        at = f" (event {self.seq})" if self.seq is not None else ""
        return _one_line(f"{self.region}/{self.image_id}{at}: {self.problem}")


def _one_line(text: str) -> str:
    """Control characters (a newline in an image id or a field name) shown escaped."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class ReplayReport:
    images: int
    events: int
    oldest_seq: int | None  # the oldest retained event
    pruned_through: int  # retention removed every event up to this seq
    total: int  # differences found
    differences: list[Difference]  # the first of them, in key order

    @property
    def ok(self) -> bool:
        return self.total == 0

    def summary(self) -> str:
        """One line."""
        scope = f"{self.images} images, {self.events} events"
        if self.pruned_through:
            scope += (
                f" from seq {self.oldest_seq} (retention removed through {self.pruned_through})"
            )
        if self.ok:
            return f"the event log replays to the state ({scope})"
        noun = "difference" if self.total == 1 else "differences"
        return f"the event log does not replay to the state: {self.total} {noun} ({scope})"

    def lines(self) -> list[str]:
        """The summary, then the first differences, then how many more there are."""
        out = [self.summary(), *(f"  {d}" for d in self.differences)]
        if self.total > len(self.differences):
            out.append(f"  … and {self.total - len(self.differences)} more")
        return out


@contextlib.asynccontextmanager
async def _connection(
    db: asyncpg.Connection | asyncpg.Pool,
) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db


async def verify_replay(
    db: asyncpg.Connection | asyncpg.Pool, *, show: int = SHOWN
) -> ReplayReport:
    """Fold the event log over the state and report every disagreement (the first ``show``).

    In a REPEATABLE READ snapshot of its own; on a connection already in a transaction, in that
    transaction's."""
    async with _connection(db) as conn:
        if conn.is_in_transaction():
            totals, rows = await _check(conn, show)
        else:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                totals, rows = await _check(conn, show)
    differences = [Difference(r["region"], r["image_id"], r["seq"], r["problem"]) for r in rows]
    return ReplayReport(
        images=totals["images"],
        events=totals["events"],
        oldest_seq=totals["oldest_seq"],
        pruned_through=totals["pruned_through"],
        total=rows[0]["total"] if rows else 0,
        differences=differences[:show],
    )


async def _check(
    conn: asyncpg.Connection, show: int
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    # costed high, and compiling it takes longer than running it
    await conn.execute("SET LOCAL jit = off")
    totals = await conn.fetchrow(sql("verify_totals"))
    rows = await conn.fetch(sql("verify_replay"), max(show, 1))
    return totals, rows


async def verify_database(
    dsn: str, *, connect_timeout: float = 10.0, show: int = SHOWN
) -> ReplayReport:
    """`syncer verify`: the check on the database at ``dsn`` (migrated to this code's schema).
    Any failure to run it is a one-line DatabaseError."""
    async with pool_session(
        dsn, size=1, connect_timeout=connect_timeout, server_settings=_SESSION
    ) as pool:
        await ensure_schema(pool)
        try:
            return await verify_replay(pool, show=show)
        except SESSION_ERRORS as e:
            raise DatabaseError(f"verify: database: {describe_session_error(e)}") from e
