"""Is every partition fresh and ok? The judgment behind `syncer status` and its exit status.

A configured partition is

* **failing** when its last finished pass (full or delta, whichever is newer) failed — the
  error says why (a rejected credential, an unreachable API, a paging anomaly, ...);
* **stale** when its last COMPLETE full sweep is older than ``stale_after`` (by default twice
  ``[sync].full_interval``) or never happened;
* **ok** otherwise.

A partition can be both failing and stale. Partitions the database knows but the configuration
no longer lists are shown as "not configured" and never make the status fail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from syncer.store.status import PartitionRecord, RunRecord

EXIT_OK = 0
EXIT_STALE = 3  # some partition stale, none failing
EXIT_FAILING = 4  # some partition's last pass failed


@dataclass(frozen=True)
class PartitionHealth:
    region: str
    image_type: str
    record: PartitionRecord | None  # None: configured but never synced
    configured: bool
    stale: bool
    failing: bool
    problems: tuple[str, ...]  # one line each: why stale, why failing

    @property
    def name(self) -> str:
        return f"{self.region}/{self.image_type}"

    @property
    def state(self) -> str:
        if not self.configured:
            return "not configured"
        if self.failing:
            return "failing"
        return "stale" if self.stale else "ok"


def judge(
    records: Sequence[PartitionRecord],
    configured: Sequence[tuple[str, str]],
    *,
    stale_after: float,
    now: datetime | None = None,
) -> list[PartitionHealth]:
    """Every configured partition (in configuration order), then the unconfigured ones."""
    now = now or datetime.now(UTC)
    by_key = {(r.region, r.image_type): r for r in records}
    wanted = list(dict.fromkeys(configured))
    health = [_judge(by_key.get(key), key, True, stale_after, now) for key in wanted]
    health += [
        _judge(r, key, False, stale_after, now) for key, r in by_key.items() if key not in wanted
    ]
    return health


def _judge(
    record: PartitionRecord | None,
    key: tuple[str, str],
    configured: bool,
    stale_after: float,
    now: datetime,
) -> PartitionHealth:
    problems: list[str] = []
    swept = record.last_full_sweep_at if record else None
    limit = timedelta(seconds=stale_after)
    if swept is None:
        stale = True
        problems.append("stale: no complete full sweep yet")
    else:
        stale = now - swept > limit
        if stale:
            problems.append(
                f"stale: last complete full sweep {age(swept, now)} (stale after "
                f"{format_duration(stale_after)})"
            )
    last = record.last_pass if record else None
    failing = last is not None and last.outcome == "failed"
    if failing and last is not None:
        error = " ".join((last.error or "no error recorded").split())
        name = f"partition {key[0]}/{key[1]}"
        error = error.removeprefix(f"{name}, ").removeprefix(f"{name}: ")
        when = last.finished_at or last.started_at
        problems.append(f"failing: last {last.mode} pass failed {age(when, now)}: {error}")
    return PartitionHealth(key[0], key[1], record, configured, stale, failing, tuple(problems))


def exit_status(health: Sequence[PartitionHealth]) -> int:
    mine = [h for h in health if h.configured]
    if any(h.failing for h in mine):
        return EXIT_FAILING
    if any(h.stale for h in mine):
        return EXIT_STALE
    return EXIT_OK


def age(ts: datetime | None, now: datetime | None = None) -> str:
    if ts is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - ts).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{max(seconds, 0):.0f}s ago"


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _run_json(run: RunRecord | None) -> dict[str, Any] | None:
    if run is None:
        return None
    doc = dataclasses.asdict(run)
    doc["seconds"] = run.seconds
    return doc


def health_json(h: PartitionHealth) -> dict[str, Any]:
    """One partition as `syncer status --json` and the status page (GET /v1/status) show it
    (datetimes as they are: the caller's JSON encoder writes them in ISO 8601)."""
    r = h.record
    return {
        "region": h.region,
        "image_type": h.image_type,
        "state": h.state,
        "configured": h.configured,
        "stale": h.stale,
        "failing": h.failing,
        "problems": list(h.problems),
        "live_images": r.live if r else 0,
        "last_full_sweep_at": r.last_full_sweep_at if r else None,
        "last_delta_at": r.last_delta_at if r else None,
        "watermark": r.watermark if r else None,
        "note": r.note if r else None,
        "last_full": _run_json(r.last_full if r else None),
        "last_delta": _run_json(r.last_delta if r else None),
        "running": _run_json(r.running if r else None),
    }
