"""What `syncer sync --once` and `syncer status` show a person: live progress per partition on a
terminal (plain log lines otherwise) and a summary table at the end."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from syncer.app import open_app
from syncer.config import Settings
from syncer.freshness import (
    EXIT_OK,
    PartitionHealth,
    age,
    exit_status,
    format_duration,
    health_json,
    judge,
)
from syncer.ims.authgate import CredentialHold
from syncer.store.passes import Mode, PassCounts
from syncer.store.pool import pool_session
from syncer.store.status import (
    RunRecord,
    ensure_schema,
    partition_records,
    recent_runs,
)
from syncer.sync.engine import PassResult, run_passes
from syncer.sync.partitions import Partition, plan_partitions


class TerminalProgress:
    """One line per partition, updated page by page."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[Partition, TaskID] = {}

    def _describe(self, partition: Partition, state: str, c: PassCounts) -> str:
        return (
            f"{partition.name:<28} {state:<8} pages {c.pages:>5}  images {c.images_seen:>8}  "
            f"events {c.events:>6}"
        )

    def started(self, partition: Partition, mode: Mode) -> None:
        self.tasks[partition] = self.progress.add_task(
            self._describe(partition, mode, PassCounts()), total=None
        )

    def page(self, partition: Partition, counts: PassCounts) -> None:
        self.progress.update(
            self.tasks[partition], description=self._describe(partition, "syncing", counts)
        )

    def finished(self, result: PassResult) -> None:
        task = self.tasks.get(result.partition)
        if task is None:
            task = self.tasks[result.partition] = self.progress.add_task("", total=None)
        self.progress.update(
            task,
            description=self._describe(result.partition, result.outcome, result.counts),
            total=1,
            completed=1,
        )


def summary(results: Sequence[PassResult], mode: str, held: Sequence[CredentialHold] = ()) -> Table:
    """The end-of-run table; a failure caused by a rejected credential (``held``) is named in
    a few words, its reason being printed once below the table."""
    t = Table(title=f"{mode} sync", title_justify="left", header_style="bold")
    for col in (
        "partition",
        "outcome",
        "pages",
        "images",
        "created",
        "updated",
        "deleted",
        "seconds",
        "note / error",
    ):
        t.add_column(
            col,
            justify="right"
            if col in ("pages", "images", "created", "updated", "deleted", "seconds")
            else "left",
            no_wrap=col in ("partition", "outcome"),
        )
    for r in sorted(results, key=lambda r: r.partition):
        c = r.counts
        style = {"ok": "green", "failed": "red", "busy": "yellow"}[r.outcome]
        t.add_row(
            r.partition.name,
            f"[{style}]{r.outcome}[/]",
            str(c.pages),
            str(c.images_seen),
            str(c.created),
            str(c.updated),
            str(c.deleted),
            f"{r.seconds:.1f}",
            _short_error(r, held) or r.note or "",
        )
    return t


def _short_error(r: PassResult, held: Sequence[CredentialHold]) -> str:
    error = r.error or ""
    for h in held:
        if f"{h.label} rejected: " in error:
            return f"{h.label} rejected (see below)"
    return error.removeprefix(f"partition {r.partition.name}, ").removeprefix(
        f"partition {r.partition.name}: "
    )


async def sync_once(
    settings: Settings,
    mode: Mode,
    regions: Sequence[str],
    image_types: Sequence[str],
    console: Console,
) -> list[PassResult]:
    partitions = plan_partitions(settings, regions, image_types)
    async with open_app(settings) as app:
        if console.is_terminal:
            with Progress(
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as bar:
                results = await run_passes(
                    app.pool, app.client, partitions, mode, settings, progress=TerminalProgress(bar)
                )
        else:
            logging.getLogger("syncer").setLevel(logging.INFO)
            results = await run_passes(app.pool, app.client, partitions, mode, settings)
        problem = app.client.credential_problem()
        held = app.client.credential_holds()
    console.print(summary(results, mode, held))
    failed = [r for r in results if r.outcome != "ok"]
    if failed:
        console.print(f"{len(failed)} of {len(results)} partitions did not complete", style="red")
    if problem:  # once, however many partitions it failed
        console.print(problem, style="red", markup=False, highlight=False, soft_wrap=True)
    return results


async def show_status(
    settings: Settings,
    console: Console,
    *,
    stale_after: float | None = None,
    as_json: bool = False,
    runs: int = 10,
) -> int:
    """Print every partition's freshness and last passes; return the exit status
    (``freshness.EXIT_OK`` when every configured partition is fresh and ok)."""
    if stale_after is None:
        stale_after = 2 * settings.sync.full_interval
    async with pool_session(
        settings.database.dsn, size=2, connect_timeout=settings.database.connect_timeout
    ) as pool:
        await ensure_schema(pool)
        records = await partition_records(pool)
        recent = await recent_runs(pool, runs) if runs > 0 and not as_json else []
    configured = [(p.region, p.image_type) for p in plan_partitions(settings)]
    now = datetime.now(UTC)
    health = judge(records, configured, stale_after=stale_after, now=now)
    code = exit_status(health)
    if as_json:
        doc = {
            "ok": code == EXIT_OK,
            "exit_status": code,
            "stale_after_seconds": stale_after,
            "partitions": [health_json(h) for h in health],
        }
        console.out(orjson.dumps(doc, default=str).decode(), highlight=False)
        return code
    console.print(_partitions_table(health, stale_after, now))
    problems = [(h, p) for h in health for p in h.problems if h.configured]
    for h, problem in problems:
        style = "red" if problem.startswith("failing") else "yellow"
        console.print(
            f"{h.name}  {problem}", style=style, markup=False, highlight=False, soft_wrap=True
        )
    if recent:
        console.print(_runs_table(recent))
    if code == EXIT_OK:
        console.print(f"all {len(configured)} partitions fresh and ok", style="green")
    else:
        failing = sum(h.failing for h in health if h.configured)
        stale = sum(h.stale for h in health if h.configured)
        console.print(
            f"{failing} failing, {stale} stale of {len(configured)} partitions", style="red"
        )
    return code


def _pass_cell(run: RunRecord | None, running: RunRecord | None, now: datetime) -> str:
    lines = []
    if run is not None:
        style = "green" if run.outcome == "ok" else "red"
        took = f" in {run.seconds:.1f}s" if run.seconds is not None else ""
        lines.append(f"[{style}]{run.outcome}[/] {age(run.finished_at or run.started_at, now)}")
        lines.append(f"{run.images_seen} seen +{run.created} ~{run.updated} -{run.deleted}{took}")
        lines.append(escape(run.worker))
    if running is not None:
        lines.append(f"[cyan]running[/] since {age(running.started_at, now)}")
        lines.append(escape(running.worker))
    return "\n".join(lines) or "never"


def _partitions_table(
    health: Sequence[PartitionHealth], stale_after: float, now: datetime
) -> Table:
    t = Table(
        title=f"partitions (stale when the last complete full sweep is older than "
        f"{format_duration(stale_after)})",
        title_justify="left",
        header_style="bold",
    )
    t.add_column("partition", no_wrap=True)
    t.add_column("state", no_wrap=True)
    t.add_column("live", justify="right")
    t.add_column("full sweep")
    t.add_column("last full pass")
    t.add_column("last delta pass")
    styles = {"ok": "green", "stale": "yellow", "failing": "bold red", "not configured": "dim"}
    for h in health:
        r = h.record
        running = r.running if r else None
        t.add_row(
            h.name,
            f"[{styles[h.state]}]{h.state}[/]",
            str(r.live) if r else "0",
            age(r.last_full_sweep_at if r else None, now),
            _pass_cell(
                r.last_full if r else None,
                running if running and running.mode == "full" else None,
                now,
            ),
            _pass_cell(
                r.last_delta if r else None,
                running if running and running.mode == "delta" else None,
                now,
            ),
        )
    return t


def _runs_table(runs: Sequence[dict[str, Any]]) -> Table:
    r = Table(title="last runs", title_justify="left", header_style="bold")
    for col in ("id", "partition", "mode", "outcome", "started", "images", "c/u/d", "replica"):
        r.add_column(col)
    for run in runs:
        r.add_row(
            str(run["id"]),
            f"{run['region']}/{run['image_type']}",
            run["mode"],
            run["outcome"],
            age(run["started_at"]),
            str(run["images_seen"]),
            f"{run['created']}/{run['updated']}/{run['deleted']}",
            escape(run["worker"]),
        )
    return r
