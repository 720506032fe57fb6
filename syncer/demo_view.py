"""What ``syncer demo`` shows while it runs: a live terminal view (rich ``Live``) on a terminal,
plain progress lines otherwise (tests, CI, a pipe). Both are fed the same :class:`Tick`: the
partitions as ``syncer status`` judges them, the passes finished and the events committed since
the last tick."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from syncer.freshness import PartitionHealth, age

STATE_STYLES = {"ok": "green", "stale": "yellow", "failing": "bold red", "not configured": "dim"}
KIND_STYLES = {
    "created": "green",
    "status_changed": "cyan",
    "updated": "white",
    "deleted": "red",
    "restored": "yellow",
}


@dataclass
class Tick:
    health: Sequence[PartitionHealth]
    runs: Sequence[dict[str, Any]]  # passes finished since the last tick, in order
    events_by_kind: dict[str, int]  # events committed since the last tick
    newest_events: Sequence[dict[str, Any]]  # the newest of them, newest first
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def event_line(e: dict[str, Any]) -> str:
    status = e["new_status"] or ""
    if e["old_status"] and e["old_status"] != e["new_status"]:
        status = f"{e['old_status']} → {e['new_status']}"
    fields = ", ".join(e["fields"] or ())
    return f"event  seq {e['seq']:<7} {e['kind']:<14} {e['region']}/{e['image_id']}  {status}" + (
        f"  ({fields})" if fields else ""
    )


def run_line(r: dict[str, Any]) -> str:
    seconds = (r["finished_at"] - r["started_at"]).total_seconds()
    line = (
        f"pass   {r['outcome']:<6} {r['region'] + '/' + r['image_type']:<26} {r['mode']:<5} "
        f"{r['images_seen']:>6} seen  +{r['created']} ~{r['updated']} -{r['deleted']}  "
        f"{seconds:.1f}s"
    )
    if r["outcome"] != "ok" and r["error"]:
        line += f"  {' '.join(str(r['error']).split())}"
    return line


def kinds_text(by_kind: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {k}" for k, n in sorted(by_kind.items(), key=lambda kv: -kv[1]))


def summary_line(health: Sequence[PartitionHealth]) -> str:
    mine = [h for h in health if h.configured]
    states = Counter(h.state for h in mine)
    live = sum(h.record.live for h in mine if h.record is not None)
    return (
        f"status {len(mine)} partitions: {states['ok']} ok, {states['stale']} stale, "
        f"{states['failing']} failing; {live:,} live images"
    )


class PlainView:
    """Progress lines: every full pass, every pass that changed something or failed, the events
    (one line each, or a count and the newest few when many landed at once), and a status line
    every ``every`` seconds."""

    def __init__(self, console: Console, *, every: float = 10.0) -> None:
        self.console = console
        self.every = every
        self._last_summary = 0.0
        self.events: Counter[str] = Counter()

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def update(self, tick: Tick) -> None:
        for r in tick.runs:
            if (
                r["mode"] == "full"
                or r["outcome"] != "ok"
                or r["created"] + r["updated"] + r["deleted"]
            ):
                self.say(run_line(r))
        n = sum(tick.events_by_kind.values())
        self.events.update(tick.events_by_kind)
        if n > 10:
            last = tick.newest_events[0]["seq"] if tick.newest_events else "?"
            self.say(f"events {n:,} new through seq {last}: {kinds_text(tick.events_by_kind)}")
            shown = tick.newest_events[:3]
        else:
            shown = tick.newest_events[:n]
        for e in reversed(shown):
            self.say(event_line(e))
        now = time.monotonic()
        if tick.health and now - self._last_summary >= self.every:
            self._last_summary = now
            self.say(summary_line(tick.health))


class LiveView:
    """The renderable of a rich ``Live``: partitions, live counts, the latest events."""

    def __init__(self, footer: str, *, keep: int = 14) -> None:
        self.footer = footer
        self.latest: deque[dict[str, Any]] = deque(maxlen=keep)
        self.events: Counter[str] = Counter()
        self.tick: Tick | None = None

    def update(self, tick: Tick) -> None:
        self.tick = tick
        self.events.update(tick.events_by_kind)
        for e in reversed(tick.newest_events):
            self.latest.appendleft(e)

    def render(self) -> RenderableType:
        tick = self.tick
        if tick is None:
            return Text("starting …", style="dim")
        parts: list[RenderableType] = [
            self._partitions(tick),
            self._counts(tick.health),
            self._events(),
            Text(
                f"events this run: {sum(self.events.values()):,}"
                + (f" ({kinds_text(dict(self.events))})" if self.events else "")
                + f"  ·  {self.footer}",
                style="dim",
            ),
        ]
        return Group(*parts)

    def _partitions(self, tick: Tick) -> Table:
        t = Table(title="partitions", title_justify="left", header_style="bold", expand=False)
        for col in ("partition", "state", "live", "full sweep", "last pass", "now"):
            t.add_column(col, justify="right" if col == "live" else "left", no_wrap=True)
        for h in tick.health:
            r = h.record
            last = r.last_pass if r else None
            last_text = ""
            if last is not None:
                style = "green" if last.outcome == "ok" else "red"
                took = f" {last.seconds:.1f}s" if last.seconds is not None else ""
                last_text = (
                    f"[{style}]{last.outcome}[/] {last.mode} "
                    f"{age(last.finished_at or last.started_at, tick.now)}  "
                    f"+{last.created} ~{last.updated} -{last.deleted}{took}"
                )
            running = r.running if r else None
            t.add_row(
                h.name,
                f"[{STATE_STYLES[h.state]}]{h.state}[/]",
                f"{r.live:,}" if r else "0",
                age(r.last_full_sweep_at if r else None, tick.now),
                last_text,
                f"[cyan]{running.mode} sweeping[/] {age(running.started_at, tick.now)}"
                if running
                else "",
            )
        return t

    def _counts(self, health: Sequence[PartitionHealth]) -> Table:
        regions = list(dict.fromkeys(h.region for h in health if h.configured))
        types = list(dict.fromkeys(h.image_type for h in health if h.configured))
        live = {
            (h.region, h.image_type): (h.record.live if h.record else 0)
            for h in health
            if h.configured
        }
        t = Table(title="live images", title_justify="left", header_style="bold")
        t.add_column("region")
        for ty in types:
            t.add_column(ty, justify="right")
        t.add_column("total", justify="right", style="bold")
        for region in regions:
            row = [live.get((region, ty), 0) for ty in types]
            t.add_row(region, *[f"{n:,}" for n in row], f"{sum(row):,}")
        return t

    def _events(self) -> Table:
        t = Table(title="latest events", title_justify="left", header_style="bold")
        for col in ("seq", "kind", "image", "status", "changed"):
            t.add_column(col, justify="right" if col == "seq" else "left", no_wrap=col != "changed")
        for e in self.latest:
            status = e["new_status"] or ""
            if e["old_status"] and e["old_status"] != e["new_status"]:
                status = f"{e['old_status']} → {e['new_status']}"
            t.add_row(
                str(e["seq"]),
                f"[{KIND_STYLES.get(e['kind'], 'white')}]{e['kind']}[/]",
                escape(f"{e['region']}/{e['image_id'][:8]}…"),
                escape(status),
                escape(", ".join(e["fields"] or ())),
            )
        return t
