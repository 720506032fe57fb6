"""Run every benchmark; each prints its figures and whether they meet their targets, and the
whole run is written as JSON to bench/results/<timestamp>.json.

``python -m bench --quick`` (``make bench-quick``): smaller catalogs and one repeat, for everyday
checks (under two minutes); ``make bench`` is the full run (under fifteen minutes here).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psutil

SUITES = [
    "bench.bench_sync",
    "bench.bench_naive",
    "bench.bench_simulator",
    "bench.bench_daemon",
    "bench.bench_feed",
]


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("suites", nargs="*", help="module names (default: all)")
    parser.add_argument("--quick", action="store_true", help="small catalogs, one repeat")
    args = parser.parse_args()
    if args.quick:
        os.environ["BENCH_QUICK"] = "1"  # read by bench.common at import
    from bench.common import RESULTS  # (after BENCH_QUICK is set)

    began = time.monotonic()
    started = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    doc: dict[str, object] = {
        "started": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "git": git_revision(),
        "machine": machine(),
        "load_before": [round(x, 2) for x in load_before],
        "suites": {},
    }
    print(
        f"bench {'--quick ' if args.quick else ''}{started:%Y-%m-%d %H:%M} UTC, "
        f"{doc['machine']['cpus']} cores ({doc['machine']['cpu_model']}), "  # type: ignore[index]
        f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
        flush=True,
    )
    failed = 0
    suites: dict[str, object] = {}
    for name in args.suites or SUITES:
        module = importlib.import_module(name if name.startswith("bench.") else f"bench.{name}")
        print(f"\n=== {module.__name__.removeprefix('bench.')} ===", flush=True)
        result = module.main()
        suites[result.name] = result.to_json()
        failed += 0 if result.ok else 1
    checks = [c for s in suites.values() for c in s["checks"]]  # type: ignore[attr-defined]
    doc["suites"] = suites
    doc["seconds"] = round(time.monotonic() - began, 1)
    doc["load_after"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{started:%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json"
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(f"\n=== summary ({doc['seconds']:.0f}s; results in {path}) ===")
    for c in checks:
        print(f"  [{'ok' if c['ok'] else 'MISS'}] {c['figure']}: {c['text']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
