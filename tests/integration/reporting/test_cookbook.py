"""Every ```sql query of docs/sql.md and of the README runs as the ims_reader role (so the grants
are proven with it) against the played catalog (conftest.py), and the key ones give the answers
the script implies.

Each statement starts with a ``-- title`` comment line; checks and parameters are keyed by it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from syncer.store.migrate import READER_ROLE, REPORTING_FUNCTIONS, REPORTING_VIEWS
from tests.integration.reporting.conftest import FAILING, REGION, Played, Scenario

ROOT = Path(__file__).resolve().parents[3]
COOKBOOK = ROOT / "docs" / "sql.md"
README = ROOT / "README.md"

# Parameters of the queries that have some, by the start of their title.
PARAMS: dict[str, Callable[[Scenario], list[Any]]] = {
    "The full history of one image": lambda s: [REGION, s.uploaded],
    "Follow the feed from SQL": lambda s: [0],
}


def by_prefix(mapping: dict[str, Any], prefix: str) -> Any:
    """The one value whose title starts with ``prefix``."""
    titles = [t for t in mapping if t.startswith(prefix)]
    assert len(titles) == 1, f"{len(titles)} queries titled {prefix!r}...: {titles}"
    return mapping[titles[0]]


def sql_blocks(text: str) -> list[str]:
    return re.findall(r"^```sql\n(.*?)^```", text, re.S | re.M)


def statements(block: str) -> list[str]:
    """Split on `;` outside string literals and comments."""
    out, current, i = [], [], 0
    while i < len(block):
        c = block[i]
        if c == "'":
            end = i + 1
            while True:
                end = block.index("'", end)
                if block[end + 1 : end + 2] == "'":
                    end += 2
                    continue
                break
            current.append(block[i : end + 1])
            i = end + 1
        elif block.startswith("--", i):
            end = block.find("\n", i)
            end = len(block) if end < 0 else end
            current.append(block[i:end])
            i = end
        elif c == ";":
            out.append("".join(current).strip())
            current, i = [], i + 1
        else:
            current.append(c)
            i += 1
    assert not "".join(current).strip(), f"a statement without its ';': {''.join(current)!r}"
    return out


def titled(text: str) -> dict[str, str]:
    """title → statement, for every statement of every ```sql block."""
    found: dict[str, str] = {}
    for block in sql_blocks(text):
        for stmt in statements(block):
            first = stmt.splitlines()[0]
            assert first.startswith("-- "), f"a statement without a '-- title' line: {stmt!r}"
            title = first[3:].strip()
            assert title not in found, f"two statements titled {title!r}"
            found[title] = stmt
    return found


def test_the_splitter_keeps_semicolons_in_strings_and_comments() -> None:
    block = "-- a; b\nSELECT ';' AS x, 'it''s; fine';\n-- two\nSELECT 2;\n"
    assert statements(block) == ["-- a; b\nSELECT ';' AS x, 'it''s; fine'", "-- two\nSELECT 2"]


async def run_as_reader(played: Played, queries: dict[str, str]) -> dict[str, list[asyncpg.Record]]:
    conn = await asyncpg.connect(played.admin_dsn)  # a superuser, who may become the reader
    results: dict[str, list[asyncpg.Record]] = {}
    try:
        for title, stmt in queries.items():
            n_params = len(set(re.findall(r"\$(\d+)", stmt)))
            given = [f(played.scenario) for k, f in PARAMS.items() if title.startswith(k)]
            args = given[0] if given else []
            assert len(args) == n_params, f"{title!r}: give its {n_params} parameters in PARAMS"
            tx = conn.transaction(readonly=True)
            await tx.start()
            try:
                await conn.execute(f"SET LOCAL ROLE {READER_ROLE}")
                assert await conn.fetchval("SELECT current_user") == READER_ROLE
                try:
                    results[title] = await conn.fetch(stmt, *args)
                except asyncpg.PostgresError as e:
                    pytest.fail(f"{title!r} failed as {READER_ROLE}: {type(e).__name__}: {e}")
            finally:
                await tx.rollback()
    finally:
        await conn.close()
    return results


async def test_every_cookbook_query_runs_as_the_reader_and_answers(played: Played) -> None:
    s = played.scenario
    text = COOKBOOK.read_text()
    queries = titled(text)
    assert len(queries) >= 25
    for name in (*REPORTING_VIEWS, *(f.split("(")[0] for f in REPORTING_FUNCTIONS)):
        assert any(name in q for q in queries.values()), f"no cookbook query reads {name}"
    before = datetime.now(UTC)
    got = await run_as_reader(played, queries)
    after = datetime.now(UTC)
    assert set(got) == set(queries)

    def answer(prefix: str) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = by_prefix(got, prefix)
        return rows

    def ids(prefix: str) -> list[str]:
        return [r["image_id"] for r in answer(prefix)]

    live = Counter((region, t) for region, t, _ in s.catalog)
    by_type = {(r["region"], r["image_type"]): r["images"] for r in answer("What is live")}
    assert by_type == dict(live)
    os_counts = Counter(o.get("__os_type") for _, _, o in s.catalog)
    assert {r["os_type"]: r["images"] for r in answer("Images per OS")} == dict(os_counts)
    arm = {o["id"] for _, _, o in s.catalog if o.get("__support_arm") == "true"}
    assert 0 < len(arm) < 100
    assert set(ids("Arm images")) == arm

    in_progress = ids("Uploads in progress")
    assert in_progress[-1] == s.stuck and len(in_progress) == 2  # and the generated old one
    old = in_progress[0]
    assert ids("Images stuck in queued or saving for more than an hour") == [old]
    assert ids("Stuck for more than six hours") == [old]
    assert ids("The same without the function") == [old]
    killed = ids("Killed images")
    assert killed[0] == s.killed and len(killed) == 2  # and the generated one, seen killed first
    (this_week,) = answer("Killed uploads this week")
    assert (this_week["image_id"], this_week["name"], this_week["old_status"]) == (
        s.killed,
        "upload that fails",
        "saving",
    )

    history = answer("The full history of one image")
    assert [(r["kind"], r["old_status"], r["new_status"]) for r in history] == [
        ("created", None, "queued"),
        ("status_changed", "queued", "saving"),
        ("status_changed", "saving", "active"),
    ]
    feed = answer("Follow the feed from SQL")
    seqs = [r["seq"] for r in feed]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    assert {r["image_id"] for r in feed} >= {s.uploaded, s.killed, s.stuck, s.deleted, s.renamed}
    if before.date() == after.date():  # not across midnight UTC
        midnight = datetime.combine(after.date(), time(), UTC)
        today = Counter(r["kind"] for r in feed if r["occurred_at"] >= midnight)
        assert {r["kind"]: r["events"] for r in answer("What changed today")} == dict(today)
    (consumer,) = answer("Feed consumers and how far behind they are")
    assert (consumer["name"], consumer["lag_events"]) == ("billing", 5)
    renames = answer("Renames and other updates")
    assert [(r["image_id"], r["field"], r["new_value"]) for r in renames] == [
        (s.renamed, "name", "renamed by its owner")
    ]
    transitions: Counter[tuple[str | None, str]] = Counter()
    for r in answer("Status transitions per day"):  # one day, or two around midnight
        transitions[(r["old_status"], r["new_status"])] += r["transitions"]
    assert transitions[("queued", "saving")] == 3
    assert transitions[("saving", "killed")] == 1
    assert transitions[("active", "deleted")] == 1

    (deleted,) = answer("Recently deleted")
    assert (deleted["image_id"], deleted["deleted_because"], deleted["status_before"]) == (
        s.deleted,
        "missed_sweeps",
        "active",
    )
    assert [tuple(r) for r in answer("Deleted in the last 30 days")] == [
        (REGION, "missed_sweeps", 1)
    ]

    assert len(answer("Partition freshness")) == 8
    assert answer("Stale partitions") == []
    (failing,) = answer("Failing partitions and why")
    assert (failing["region"], failing["image_type"], failing["consecutive_failures"]) == (
        FAILING.region,
        FAILING.image_type,
        2,
    )
    (failed_passes,) = answer("Failed passes in the last day")
    assert failed_passes["failed_passes"] == 2


async def test_readme_sql_runs_as_the_reader(played: Played) -> None:
    """The README's examples are the cookbook's, verbatim (so their answers are checked there),
    and run as the reader here."""
    queries = titled(README.read_text())
    assert queries, "the README's SQL section has no ```sql block"
    cookbook = titled(COOKBOOK.read_text())
    for title, stmt in queries.items():
        assert cookbook.get(title) == stmt, f"README query {title!r} differs from docs/sql.md"
    assert set(await run_as_reader(played, queries)) == set(queries)


async def test_dashboard_sql_panels_run_as_the_reader(played: Played) -> None:
    """The Grafana dashboard's PostgreSQL panels (deploy/grafana) query as ims_reader too."""
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "syncer-dashboard.json").read_text())
    queries = {
        panel["title"]: target["rawSql"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "rawSql" in target
    }
    assert len(queries) >= 3
    got = await run_as_reader(played, queries)
    (failing,) = got["Failing partitions"]
    assert (failing["region"], failing["image_type"]) == (FAILING.region, FAILING.image_type)
    assert len(got["Partition freshness"]) == 8
    stuck = got["Stuck uploads (over 1 hour)"]
    assert len(stuck) == 1 and stuck[0]["seconds_in_status"] > 3600
    live = sum(r["images"] for r in got["Live images by region and type"])
    assert live == len(played.scenario.catalog)
