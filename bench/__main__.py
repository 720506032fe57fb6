"""Run every benchmark; each prints its figures and whether they meet their targets."""

from __future__ import annotations

import argparse
import importlib
import sys

SUITES = ["bench.bench_sync", "bench.bench_simulator", "bench.bench_daemon", "bench.bench_feed"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("suites", nargs="*", help="module names (default: all)")
    args = parser.parse_args()
    failed = 0
    for name in args.suites or SUITES:
        module = importlib.import_module(name if name.startswith("bench.") else f"bench.{name}")
        print(f"\n=== {name} ===", flush=True)
        failed += int(bool(module.main()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
