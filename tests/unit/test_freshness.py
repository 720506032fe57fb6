"""The freshness judgment of `syncer status` on hand-made records (the CLI test covers the
database side)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from syncer.freshness import EXIT_FAILING, EXIT_OK, EXIT_STALE, exit_status, judge
from syncer.store.status import PartitionRecord, RunRecord

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
HOUR = 3600.0


def run(n: int, mode: str, outcome: str, minutes_ago: float, error: str | None = None) -> RunRecord:
    started = NOW - timedelta(minutes=minutes_ago)
    return RunRecord(
        n,
        mode,
        outcome,
        started,
        started + timedelta(seconds=5),
        1,
        10,
        0,
        0,
        0,
        error,
        "h:1",
        None,
    )


def record(
    image_type: str,
    swept_minutes_ago: float | None,
    full: RunRecord | None = None,
    delta: RunRecord | None = None,
    region: str = "r1",
) -> PartitionRecord:
    swept = None if swept_minutes_ago is None else NOW - timedelta(minutes=swept_minutes_ago)
    return PartitionRecord(region, image_type, 10, swept, None, None, None, full, delta, None)


def test_fresh_stale_failing_and_unconfigured() -> None:
    records = [
        record("gold", 30, full=run(1, "full", "ok", 30)),
        record(
            "private",
            30,
            full=run(2, "full", "ok", 30),
            delta=run(3, "delta", "failed", 1, "partition r1/private, HTTP 401: no"),
        ),
        record("shared", 150, full=run(4, "full", "ok", 150)),
        # a failed full sweep followed by a good delta: the last pass is ok, so not failing
        record(
            "market", 30, full=run(5, "full", "failed", 10, "boom"), delta=run(6, "delta", "ok", 2)
        ),
        record("gold", None, full=run(7, "full", "failed", 1, "gone"), region="r-old"),
    ]
    configured = [("r1", t) for t in ("gold", "private", "shared", "market")] + [("r2", "gold")]
    health = {h.name: h for h in judge(records, configured, stale_after=2 * HOUR, now=NOW)}
    assert {n: h.state for n, h in health.items()} == {
        "r1/gold": "ok",
        "r1/private": "failing",
        "r1/shared": "stale",
        "r1/market": "ok",
        "r2/gold": "stale",
        "r-old/gold": "not configured",
    }
    assert health["r1/private"].problems == (
        "failing: last delta pass failed 55s ago: HTTP 401: no",
    )
    assert health["r1/shared"].problems == (
        "stale: last complete full sweep 2h ago (stale after 2h)",
    )
    assert health["r2/gold"].problems == ("stale: no complete full sweep yet",)
    assert exit_status(list(health.values())) == EXIT_FAILING


def test_exit_status() -> None:
    ok = [record("gold", 10, full=run(1, "full", "ok", 10))]
    assert exit_status(judge(ok, [("r1", "gold")], stale_after=HOUR, now=NOW)) == EXIT_OK
    assert exit_status(judge(ok, [("r1", "gold")], stale_after=60, now=NOW)) == EXIT_STALE
    # a partition that is not configured never fails the check
    assert exit_status(judge(ok, [], stale_after=60, now=NOW)) == EXIT_OK
