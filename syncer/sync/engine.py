"""Partition passes: list a partition page by page and land every page in PostgreSQL.

A full pass that lists its partition COMPLETELY then judges absences (tombstones); anything
short of complete — an API error, a paging anomaly, a malformed page, a cancelled pass — fails
the pass and tombstones nothing. Pages already committed stay committed. A delta pass lists
``updated_at >= watermark - overlap`` and never tombstones by absence.

The watermark moves only when a pass completes, to the moment its listing began: in the API's
clock (its first answer's ``Date``) or ours, whichever is earlier, minus a skew margin. Every
change after that moment carries a later ``updated_at`` and is listed by the next delta; every
change before it was listed by this pass. A failed pass leaves the watermark where it was.

While page N is being written, page N+1 is already being fetched (one page of look-ahead), so
memory stays bounded by a couple of pages whatever the catalog's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

import asyncpg

from syncer import metrics
from syncer.config import Settings
from syncer.errors import SyncerError
from syncer.ims.client import ImsClient
from syncer.ims.pager import CLOCK_SKEW, Listing, ListingStats, iter_listing
from syncer.ims.wire import WireImage
from syncer.records import digest_page
from syncer.store.leases import THIS_PROCESS, Replica
from syncer.store.passes import Mode, PartitionBusy, PassCounts, SweepVerdict, partition_pass
from syncer.store.pool import SESSION_ERRORS, describe_session_error
from syncer.sync.partitions import Partition

log = logging.getLogger(__name__)

Outcome = Literal["ok", "failed", "busy"]


@dataclass
class PassResult:
    partition: Partition
    mode: Mode
    outcome: Outcome = "failed"
    counts: PassCounts = field(default_factory=PassCounts)
    error: str | None = None
    run_id: int | None = None
    seconds: float = 0.0
    verdict: SweepVerdict | None = None
    note: str | None = None


class Progress(Protocol):
    def started(self, partition: Partition, mode: Mode) -> None: ...
    def page(self, partition: Partition, counts: PassCounts) -> None: ...
    def finished(self, result: PassResult) -> None: ...


class NoProgress:
    def started(self, partition: Partition, mode: Mode) -> None:
        pass

    def page(self, partition: Partition, counts: PassCounts) -> None:
        pass

    def finished(self, result: PassResult) -> None:
        pass


async def _prefetch(
    pages: AsyncIterator[list[WireImage]], depth: int = 1
) -> AsyncIterator[list[WireImage]]:
    """Iterate ``pages`` with up to ``depth`` pages fetched ahead of the consumer."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=depth)

    async def produce() -> None:
        try:
            async for page in pages:
                await queue.put(("page", page))
            await queue.put(("end", None))
        except Exception as e:  # handed to the consumer, re-raised there
            await queue.put(("error", e))

    task = asyncio.create_task(produce())
    try:
        while True:
            kind, item = await queue.get()
            if kind == "page":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(Exception):
            await pages.aclose()  # type: ignore[attr-defined]


async def run_pass(
    pool: asyncpg.Pool,
    client: ImsClient,
    partition: Partition,
    mode: Mode,
    settings: Settings,
    *,
    replica: Replica = THIS_PROCESS,
    control: asyncpg.Pool | None = None,
    progress: Progress | None = None,
) -> PassResult:
    """One pass over one partition. Never raises for a failed pass: the result says why.

    The pass holds its partition's lease as ``replica``, renewed on ``control`` (default
    ``pool``)."""
    progress = progress or NoProgress()
    result = PassResult(partition, mode)
    began = time.monotonic()
    extra: dict[str, object] = {"partition": partition.name, "mode": mode}
    try:
        async with partition_pass(
            pool,
            partition.region,
            partition.image_type,
            mode,
            replica=replica,
            lease_ttl=settings.sync.lease_ttl,
            control=control,
        ) as p:
            result.run_id, result.counts = p.run_id, p.counts
            extra["run_id"] = p.run_id
            progress.started(partition, mode)
            log.info("pass started", extra=extra)
            since = None
            if mode == "delta" and p.watermark is not None:
                since = p.watermark - timedelta(seconds=settings.sync.delta_overlap)
            listing = Listing(
                region=partition.region,
                image_type=partition.image_type,
                page_size=settings.api.page_size,
                updated_since=since,
            )
            stats = ListingStats()
            pages = iter_listing(client, listing, partition=partition.name, stats=stats)
            async for objects in _prefetch(pages):
                await p.apply_page(digest_page(objects, partition=partition.name))
                progress.page(partition, p.counts)
            listed_from = min(p.started_at, stats.started_at or p.started_at)
            covered_from = listed_from - CLOCK_SKEW
            if mode == "full":
                result.verdict = await p.complete_full_sweep(
                    missed_sweeps_to_delete=settings.sync.delete_after_missed_sweeps,
                    min_ratio=settings.sync.min_sweep_ratio,
                    covered_from=covered_from,
                )
            else:
                await p.complete_delta(covered_from=covered_from)
            result.note = p.note
        result.outcome = "ok"
    except PartitionBusy as e:
        result.outcome, result.error = "busy", str(e)
    except SyncerError as e:
        result.error = str(e)
    except SESSION_ERRORS as e:
        result.error = f"partition {partition.name}: database: {describe_session_error(e)}"
    except Exception as e:  # a bug must cost this pass, never the others
        log.exception("pass failed on an unexpected error", extra=extra)
        result.error = f"partition {partition.name}: internal error: {type(e).__name__}: {e}"
    result.seconds = time.monotonic() - began
    c = result.counts
    level = logging.INFO if result.outcome == "ok" else logging.WARNING
    log.log(
        level,
        "pass %s",
        result.outcome,
        extra=extra
        | {
            "pages": c.pages,
            "images": c.images_seen,
            "events": c.events,
            "unfit": c.unfit or None,
            "seconds": round(result.seconds, 3),
            "error": result.error,
        },
    )
    metrics.observe_pass(result)
    progress.finished(result)
    return result


async def run_passes(
    pool: asyncpg.Pool,
    client: ImsClient,
    partitions: Sequence[Partition],
    mode: Mode,
    settings: Settings,
    *,
    replica: Replica = THIS_PROCESS,
    control: asyncpg.Pool | None = None,
    progress: Progress | None = None,
) -> list[PassResult]:
    """Passes over several partitions, ``sync.partition_concurrency`` at a time."""
    gate = asyncio.Semaphore(settings.sync.partition_concurrency)

    async def one(partition: Partition) -> PassResult:
        async with gate:
            return await run_pass(
                pool,
                client,
                partition,
                mode,
                settings,
                replica=replica,
                control=control,
                progress=progress,
            )

    return list(await asyncio.gather(*(one(p) for p in partitions)))
