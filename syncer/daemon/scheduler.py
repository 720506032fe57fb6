"""When each partition is swept: APScheduler 3 jobs, and the rules that keep several replicas
from doing the same work.

Per partition, two interval jobs on one ``AsyncIOScheduler``: a full sweep every
``[sync].full_interval`` and a delta poll every ``[sync].delta_interval``, each started at a
random offset and with jitter so partitions do not fire together; misfires are coalesced (and
logged); a job never overlaps itself. At start, a one-off full sweep for every partition whose
last complete one is older than ``full_interval``.

Every replica runs the same jobs; when one fires, the replica runs the pass only if
- no pass of the partition runs in this process (a due delta is skipped behind a full sweep);
- the database answers and the partition's credential is not held back;
- this replica owns the partition (``Membership.owns``) and no replica started a pass of that
  mode in the last half interval — or the partition is overdue (nothing started for two
  intervals, e.g. its owner is stuck), whoever owns it.
The lease then makes sure no two passes of a partition ever run at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syncer import metrics
from syncer.config import Settings
from syncer.daemon.membership import Membership
from syncer.ims.client import ImsClient
from syncer.store import leases
from syncer.store.passes import Mode
from syncer.store.pool import SESSION_ERRORS
from syncer.sync.engine import PassResult
from syncer.sync.partitions import Partition

log = logging.getLogger(__name__)

RunPass = Callable[[Partition, Mode], Awaitable[PassResult]]

OWNER_SPACING = 0.5  # the owner skips a pass when one started within this share of the interval
OVERDUE = 2.0  # anyone runs a pass when none started for this many intervals


def _jitter(interval: float) -> float:
    return min(interval * 0.1, 60.0)


class PartitionScheduler:
    def __init__(
        self,
        settings: Settings,
        partitions: Sequence[Partition],
        membership: Membership,
        client: ImsClient,
        run_pass: RunPass,
    ) -> None:
        self.settings = settings
        self.partitions = list(partitions)
        self.membership = membership
        self.client = client
        self.run_pass = run_pass
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.running: dict[Partition, asyncio.Task[object]] = {}
        self.slots = asyncio.Semaphore(settings.sync.partition_concurrency)
        self.started_at = asyncio.get_running_loop().time()
        self.stopping = False
        self.holding = 0  # passes running (each holds its partition's lease)
        self.scheduler.add_listener(self._missed, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)

    @property
    def is_running(self) -> bool:
        return bool(self.scheduler.running) and not self.stopping

    def interval(self, mode: Mode) -> float:
        s = self.settings.sync
        return s.full_interval if mode == "full" else s.delta_interval

    async def start(self, ages: Mapping[tuple[str, str], tuple[datetime, float]]) -> None:
        """Schedule every partition's jobs and start; ``ages`` says when each partition's last
        complete full sweep started and how long ago (``store.status.full_sweep_ages``)."""
        now = datetime.now(UTC)
        rng = random.Random()
        for p in self.partitions:
            full, delta = self.interval("full"), self.interval("delta")
            swept = ages.get((p.region, p.image_type))
            if swept is None or swept[1] >= full:
                self._add(p, "full", DateTrigger(now + timedelta(seconds=rng.uniform(0, 1))), "now")
                first_full = now + timedelta(seconds=full)
            else:
                first_full = now + timedelta(seconds=full - swept[1])
            self._add(
                p,
                "full",
                IntervalTrigger(seconds=full, start_date=first_full, jitter=_jitter(full)),
            )
            self._add(
                p,
                "delta",
                IntervalTrigger(
                    seconds=delta,
                    start_date=now + timedelta(seconds=rng.uniform(0, delta)),
                    jitter=_jitter(delta),
                ),
            )
        self.scheduler.start()
        log.info(
            "scheduler started",
            extra={
                "partitions": len(self.partitions),
                "full_interval": self.interval("full"),
                "delta_interval": self.interval("delta"),
            },
        )

    def _add(self, p: Partition, mode: Mode, trigger: object, tag: str = "every") -> None:
        interval = self.interval(mode)
        self.scheduler.add_job(
            self._fire,
            trigger,
            args=(p, mode),
            id=f"{mode}:{p.name}:{tag}",
            name=f"{mode} {p.name}",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(interval)),
        )

    def _retry_full(self, p: Partition) -> None:
        delay = min(max(self.interval("delta"), 1.0), 30.0)
        when = datetime.now(UTC) + timedelta(seconds=delay)
        self.scheduler.add_job(
            self._fire,
            DateTrigger(when),
            args=(p, "full"),
            id=f"full:{p.name}:retry",
            name=f"full {p.name} (retry)",
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _missed(self, event: JobExecutionEvent) -> None:
        what = (
            "missed its time; runs coalesced"
            if event.code == EVENT_JOB_MISSED
            else ("skipped: its previous run has not finished")
        )
        log.info("scheduled pass %s", what, extra={"job": event.job_id})

    async def stop(self, grace: float) -> None:
        """No new passes; cancel the running ones (a page transaction in flight rolls back,
        each run is closed as failed, each lease released) and wait up to ``grace`` s."""
        self.stopping = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            if pending:
                log.warning("passes still stopping after the timeout", extra={"n": len(pending)})

    async def _reason_to_skip(self, p: Partition, mode: Mode) -> str | None:
        if self.stopping:
            return "stopping"
        if p in self.running:
            return "a pass of the partition is running in this replica"
        if not self.membership.health.up:
            return f"database unreachable: {self.membership.health.reason}"
        hold = self.client.credential_hold(p.region)
        if hold is not None:
            return f"credential held back until {hold.until:%H:%M:%SZ}"
        interval = self.interval(mode)
        try:
            since = await leases.since_last_pass(
                self.membership.control, p.region, p.image_type, mode
            )
        except SESSION_ERRORS as e:
            return f"database: {type(e).__name__}"
        if since is None:
            since = asyncio.get_running_loop().time() - self.started_at + interval
        if since >= OVERDUE * interval:
            return None
        if not self.membership.owns(p):
            return "owned by another replica"
        if since < OWNER_SPACING * interval:
            return f"a {mode} pass started {since:.0f}s ago"
        return None

    async def _fire(self, p: Partition, mode: Mode) -> None:
        # A due full sweep waits for a delta of its partition running here (deltas are short);
        # a due delta is skipped behind anything running (the next one comes soon).
        while mode == "full" and (other := self.running.get(p)) is not None:
            await asyncio.wait({other})
        reason = await self._reason_to_skip(p, mode)
        if reason is not None:
            log.debug("pass skipped", extra={"partition": p.name, "mode": mode, "reason": reason})
            return
        task = asyncio.current_task()
        assert task is not None
        self.running[p] = task
        try:
            async with self.slots:  # [sync].partition_concurrency passes at a time
                if self.stopping:
                    return
                self.holding += 1
                metrics.set_leases_held(self.holding)
                try:
                    result = await self.run_pass(p, mode)
                finally:
                    self.holding -= 1
                    metrics.set_leases_held(self.holding)
            if result.outcome == "busy" and mode == "full" and not self.stopping:
                # Another replica holds the partition (a delta, most likely): a full sweep
                # that was due must not wait a whole interval for that.
                self._retry_full(p)
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            log.info("pass cancelled: stopping", extra={"partition": p.name, "mode": mode})
        finally:
            del self.running[p]
