"""The simulator's scale figure (issue: "The IMS simulator", Scale): a 1,000,000-image catalog is
served at a page latency within 2× that of a 10,000-image one, measured in one run.

Both catalogs are ONE partition (region × image type), the hardest case for the order index.
Each simulator runs in its own process; this process is the client. A sample is one
``GET /v2/cloudimages?__imagetype=private&sort_key=created_at&sort_dir=asc&limit=500&marker=M``
with the marker at a random position in the middle 80% of the partition (found beforehand, untimed, with a
``created_at=gte:`` query), timed end to end over HTTP, body read and parsed. Also shown, not
judged: the default order (desc), a delta query (``updated_at=gte:``), and each server's RSS.
The render cache is off in both servers: every page is rendered, so the figure is the scaling
of the order indexes (a warm cache would flatter the small catalog, whose pages all fit in it).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import aiohttp
import orjson
import psutil

from bench.common import QUICK, Check, SuiteResult, free_port, median, wait_port

SIZES = (10_000, int(os.environ.get("BENCH_SIM_LARGE", "200000" if QUICK else "1000000")))
SAMPLES = int(os.environ.get("BENCH_SIM_SAMPLES", "40" if QUICK else "150"))
PAGE = 500
TARGET_RATIO = 2.0


def serve(port: int, images: int) -> None:
    """Child process: one partition of ``images`` images on 127.0.0.1:port until SIGTERM."""
    import signal

    from syncer.simulator import Catalog, Simulator

    catalog = Catalog(
        regions=["bench-1"], images_per_partition=images, seed=1, image_types=("private",)
    )
    catalog.render_cache.limit = 0

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with Simulator(catalog, port=port):
            await stop.wait()

    asyncio.run(run())


@contextmanager
def simulator(images: int) -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    code = f"from bench.bench_simulator import serve; serve({port}, {images})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    try:
        began = time.monotonic()
        wait_port(port, timeout=600)
        print(f"  {images:>9,} images generated and listening in {time.monotonic() - began:.1f}s")
        yield f"http://127.0.0.1:{port}/bench-1/v2/cloudimages", psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def get(
    session: aiohttp.ClientSession, url: str, params: dict[str, str]
) -> dict[str, object]:
    async with session.get(url, params=params) as r:
        assert r.status == 200, (r.status, await r.text())
        doc: dict[str, object] = orjson.loads(await r.read())
        return doc


def epoch(s: str) -> int:
    return int(datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def stamp(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def measure(url: str) -> dict[str, float]:
    rng = random.Random(7)
    base = {"__imagetype": "private", "limit": str(PAGE)}
    async with aiohttp.ClientSession() as session:
        first = await get(session, url, {**base, "sort_dir": "asc", "limit": "1"})
        last = await get(session, url, {**base, "sort_dir": "desc", "limit": "1"})
        lo = epoch(first["images"][0]["created_at"])  # type: ignore[index]
        hi = epoch(last["images"][0]["created_at"])  # type: ignore[index]
        markers = []
        margin = (hi - lo) // 10  # keep a full page on both sides of every marker
        for _ in range(SAMPLES + 10):
            at = stamp(rng.randrange(lo + margin, hi - margin))
            where = {"limit": "1", "sort_dir": "asc", "created_at": f"gte:{at}"}
            doc = await get(session, url, {**base, **where})
            markers.append(doc["images"][0]["id"])  # type: ignore[index]
        figures: dict[str, float] = {}
        for name, extra in (
            ("asc", {"sort_key": "created_at", "sort_dir": "asc"}),
            ("desc", {}),
        ):
            times = []
            for i, marker in enumerate(markers):
                began = time.perf_counter()
                doc = await get(session, url, {**base, **extra, "marker": marker})
                elapsed = time.perf_counter() - began
                assert len(doc["images"]) == PAGE  # type: ignore[arg-type]
                if i >= 10:  # the first ten warm up
                    times.append(elapsed)
            figures[name] = median(times) * 1000
        # a delta poll: what changed in the last few days of the catalog
        since = {"updated_at": f"gte:{stamp(hi - 3 * 86400)}", "sort_dir": "asc"}
        await get(session, url, {**base, **since})  # builds the updated_at index once
        times = []
        for _ in range(30):
            began = time.perf_counter()
            await get(session, url, {**base, **since})
            times.append(time.perf_counter() - began)
        figures["delta"] = median(times) * 1000
    return figures


def main() -> SuiteResult:
    results: dict[int, dict[str, float]] = {}
    for size in SIZES:
        with simulator(size) as (url, proc):
            results[size] = asyncio.run(measure(url))
            results[size]["rss_mb"] = proc.memory_info().rss / 2**20
    small, large = results[SIZES[0]], results[SIZES[1]]
    print(f"  page of {PAGE}, median of {SAMPLES} at random markers (ms):")
    print(f"  {'images':>11} {'asc':>8} {'desc':>8} {'delta':>8} {'server RSS':>11}")
    for size, r in results.items():
        figures = f"{r['asc']:>8.2f} {r['desc']:>8.2f} {r['delta']:>8.2f}"
        print(f"  {size:>11,} {figures} {r['rss_mb']:>8.0f} MB")
    ratio = large["asc"] / small["asc"]
    check = Check(
        "sim",
        f"simulator page latency {SIZES[1]:,} vs {SIZES[0]:,} images in one partition, render "
        f"cache off: {large['asc']:.1f} vs {small['asc']:.1f} ms = {ratio:.2f}× "
        f"(target ≤ {TARGET_RATIO}×; desc {large['desc'] / small['desc']:.2f}×)",
        ratio <= TARGET_RATIO,
        {"ratio": round(ratio, 3)},
    )
    print(f"  {check.line()}")
    return SuiteResult("bench_simulator", [check], {str(k): v for k, v in results.items()})


if __name__ == "__main__":
    sys.exit(0 if main().ok else 1)
