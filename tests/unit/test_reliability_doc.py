"""docs/reliability.md names the test of every fault: each one it names exists (collected by
pytest, parametrized cases included), and the rows the issue asks for are all there."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
NODE = re.compile(r"`(tests/[\w/]+\.py::\w+(?:\[[^\]`]+\])?)`")
ROWS = [
    "429 storm", "5xx bursts", "slow answers and timeouts", "connection resets mid-body",
    "invalid JSON", "an image without `id`", "an image with wrong types",
    "an image with a 10 MB name", "a 50 MB page", "unknown marker", "server limit cap",
    "no `page_info`", "the same id on two pages", "a marker that does not advance",
    "an empty page in the middle of a partition", "a rejected credential",
    "PostgreSQL down at start", "PostgreSQL restarted mid-sweep", "disk full",
    "a statement timeout on a write", "SIGKILL mid-page", "SIGTERM mid-sweep",
    "two and three replicas", "a replica losing its database connection while holding a lease",
    "a feed consumer killed and resumed", "writers committing out of order under load",
    "clock skew between replicas",
]  # fmt: skip


def test_every_row_of_the_issue_is_in_the_matrix() -> None:
    rows = [
        line.split("|")[1].strip() for line in DOC.read_text().splitlines() if line.startswith("| ")
    ]
    for wanted in ROWS:
        assert any(row.startswith(wanted) for row in rows), wanted


def test_every_test_the_matrix_names_exists() -> None:
    nodes = sorted(set(NODE.findall(DOC.read_text())))
    assert len(nodes) > 40
    missing = {n for n in nodes if not (ROOT / n.split("::")[0]).exists()}
    assert not missing, missing
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *nodes],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    for node in nodes:
        assert any(c == node or c.startswith(node + "[") for c in collected), node
