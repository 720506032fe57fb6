"""Shared plumbing for benchmarks: a PostgreSQL server, a simulator process, timing helpers."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on port {port} after {timeout:.0f}s")


@contextlib.contextmanager
def simulator_process(regions: Sequence[str], per_partition: int, seed: int = 1) -> Iterator[str]:
    """`syncer simulate` in its own process; yields the endpoint template."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncer",
            "--log-format",
            "json",
            "simulate",
            "--port",
            str(port),
            "--regions",
            ",".join(regions),
            "--images-per-partition",
            str(per_partition),
            "--seed",
            str(seed),
            "--auth",
            "none",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}/{{region}}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class Measured:
    seconds: float
    peak_rss: int
    returncode: int
    stderr: str


def run_measured(args: Sequence[str], env: dict[str, str] | None = None) -> Measured:
    """Run a command, sampling its resident memory every 10 ms; return wall time and peak RSS."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(proc.pid)
            while not stop.is_set():
                peak = max(peak, p.memory_info().rss)
                time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = proc.communicate()
    seconds = time.perf_counter() - began
    stop.set()
    sampler.join()
    return Measured(seconds, peak, proc.returncode, stderr)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def write_config(dsn: str, endpoint: str, regions: Sequence[str], *, page_size: int = 500) -> Path:
    path = Path(tempfile.mkdtemp(prefix="syncer-bench-")) / "bench.toml"
    path.write_text(
        f'[database]\ndsn = "{dsn}"\n[api]\nendpoint = "{endpoint}"\nauth = "none"\n'
        f"page_size = {page_size}\n[sync]\nregions = {list(regions)!r}\npartition_concurrency = 4\n".replace(
            "'", '"'
        )
    )
    return path
