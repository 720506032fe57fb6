"""What `syncer sync --once` and `syncer status` show a person: live progress per partition on a
terminal (plain log lines otherwise) and a summary table at the end."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from syncer.app import open_app
from syncer.config import Settings
from syncer.ims.authgate import CredentialHold
from syncer.store.passes import Mode, PassCounts
from syncer.store.pool import pool_session
from syncer.store.status import ensure_schema, partition_status, recent_runs
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


def _age(ts: datetime | None) -> str:
    if ts is None:
        return "never"
    seconds = (datetime.now(UTC) - ts).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


async def show_status(settings: Settings, console: Console) -> None:
    async with pool_session(
        settings.database.dsn, size=2, connect_timeout=settings.database.connect_timeout
    ) as pool:
        await ensure_schema(pool)
        parts = await partition_status(pool)
        runs = await recent_runs(pool, 10)
    t = Table(title="partitions", title_justify="left", header_style="bold")
    for col in (
        "partition",
        "live images",
        "last full sweep",
        "last delta",
        "watermark",
        "last run",
        "note / error",
    ):
        t.add_column(col)
    for p in parts:
        last: Any = (
            p["last_outcome"]
            and f"{p['last_mode']} {p['last_outcome']} {_age(p['last_started_at'])}"
        )
        t.add_row(
            f"{p['region']}/{p['image_type']}",
            str(p["live"]),
            _age(p["last_full_sweep_at"]),
            _age(p["last_delta_at"]),
            str(p["watermark"] or ""),
            last or "",
            p["last_error"] or p["note"] or "",
        )
    console.print(t)
    r = Table(title="last runs", title_justify="left", header_style="bold")
    for col in (
        "id",
        "partition",
        "mode",
        "outcome",
        "started",
        "pages",
        "images",
        "c/u/d",
        "worker",
        "error",
    ):
        r.add_column(col)
    for run in runs:
        r.add_row(
            str(run["id"]),
            f"{run['region']}/{run['image_type']}",
            run["mode"],
            run["outcome"],
            _age(run["started_at"]),
            str(run["pages"]),
            str(run["images_seen"]),
            f"{run['created']}/{run['updated']}/{run['deleted']}",
            run["worker"],
            run["error"] or "",
        )
    console.print(r)
