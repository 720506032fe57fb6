"""Shared plumbing for benchmarks: processes, CPU accounting, database helpers, checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

QUICK = os.environ.get("BENCH_QUICK") == "1"
RESULTS = Path(__file__).resolve().parent / "results"  # JSON of each run (git-ignored)
REPEATS = int(os.environ.get("BENCH_REPEATS", "1" if QUICK else "3"))
MB = 1024 * 1024


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


@dataclass
class SimulatorProcess:
    endpoint: str  # the endpoint template, http://127.0.0.1:PORT/{region}
    base_url: str
    pid: int


@contextlib.contextmanager
def simulator_process(
    regions: Sequence[str],
    per_partition: int,
    seed: int = 1,
    *,
    auth: str = "none",
    env: dict[str, str] | None = None,
    render_cache: int | None = None,
) -> Iterator[SimulatorProcess]:
    """`syncer simulate` in its own process; its render cache holds the whole catalog unless
    ``render_cache`` says otherwise (so every size is served at the same cost per page)."""
    if render_cache is None:
        render_cache = max(250_000, per_partition * len(regions) * 4 + 10_000)
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
            auth,
            "--render-cache",
            str(render_cache),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_port(port, timeout=600)
        base = f"http://127.0.0.1:{port}"
        yield SimulatorProcess(base + "/{region}", base, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Measured:
    seconds: float
    peak_rss: int
    returncode: int
    stdout: str
    stderr: str


def run_measured(args: Sequence[str], env: dict[str, str] | None = None) -> Measured:
    """Run a command, sampling its resident memory every 10 ms; wall time and peak RSS."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
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
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - began
    stop.set()
    sampler.join()
    return Measured(seconds, peak, proc.returncode, stdout, stderr)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def write_config(
    dsn: str,
    endpoint: str,
    regions: Sequence[str],
    *,
    page_size: int = 500,
    auth: str = "none",
    concurrency: int = 4,
) -> Path:
    path = Path(tempfile.mkdtemp(prefix="syncer-bench-")) / "bench.toml"
    regions_toml = "[" + ", ".join(f'"{r}"' for r in regions) + "]"
    path.write_text(
        f'[database]\ndsn = "{dsn}"\n'
        f'[api]\nendpoint = "{endpoint}"\nauth = "{auth}"\npage_size = {page_size}\n'
        f"[sync]\nregions = {regions_toml}\npartition_concurrency = {concurrency}\n"
    )
    return path


# ---- CPU: who was busy -----------------------------------------------------------------------


def _proc_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def _tree_cpu(pid: int | None) -> float:
    """A process, its live children, and every child it has reaped (the postmaster reaps its
    backends, so their CPU stays counted after their sessions end)."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        t = root.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in root.children():
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
    except psutil.Error:
        return 0.0
    return float(total)


def _children_cpu() -> float:
    """CPU of this process's reaped children (the syncer or naive command just run)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _machine_busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


ROLES = ("simulator", "postgres", "client", "harness")


@dataclass
class CpuUse:
    """CPU seconds per process over one figure (summed over its repeats)."""

    client_name: str = "syncer"
    wall: float = 0.0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(ROLES, 0.0))
    machine: float = 0.0
    images: int = 0  # images the figure's steps handled (for CPU per image)

    def cores(self, role: str) -> float:
        return self.seconds[role] / self.wall if self.wall else 0.0

    @property
    def others(self) -> float:
        """Cores busy outside the processes of this benchmark (other users of the machine)."""
        return max(0.0, self.machine - sum(self.seconds.values())) / self.wall if self.wall else 0.0

    def verdict(self) -> str:
        ncpu = os.cpu_count() or 1
        busy = self.machine / self.wall if self.wall else 0.0
        name = {"client": self.client_name}
        single = [
            (self.cores(r), name.get(r, r))
            for r in ("simulator", "client", "harness")
            if self.cores(r) >= 0.85
        ]
        if single:
            top = max(single)
            return f"{top[1]} saturated ({top[0]:.2f} of one core)"
        if busy >= 0.9 * ncpu:
            return f"all {ncpu} cores busy"
        if self.cores("postgres") >= 0.85:
            return f"postgres busiest ({self.cores('postgres'):.2f} cores)"
        return "nothing saturated (waiting: latency, I/O or locks)"

    def line(self) -> str:
        name = {"client": self.client_name}
        parts = [
            f"{name.get(r, r)} {self.cores(r):.2f}"
            for r in ROLES
            if self.seconds[r] > 0.05 * self.wall or r in ("simulator", "postgres")
        ]
        per_image = ""
        if self.images:
            us = {r: self.seconds[r] / self.images * 1e6 for r in ROLES}
            shown = [f"{name.get(r, r)} {us[r]:.1f}" for r in ROLES if us[r] >= 0.05]
            per_image = f"; µs of CPU per image: {' + '.join(shown)} = {sum(us.values()):.1f}"
        return (
            f"cpu (cores over {self.wall:.1f}s): {' · '.join(parts)} · other users "
            f"{self.others:.2f} → {self.verdict()}{per_image}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "wall_seconds": round(self.wall, 3),
            "cpu_seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "client": self.client_name,
            "machine_cpu_seconds": round(self.machine, 3),
            "other_users_cores": round(self.others, 3),
            "verdict": self.verdict(),
            "images": self.images,
        }


class CpuMeter:
    """Snapshots of every process's CPU around each measured step, summed per figure."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster
        self.simulator: int | None = None
        self.uses: dict[str, CpuUse] = {}

    def _snapshot(self) -> tuple[float, dict[str, float], float]:
        return (
            time.perf_counter(),
            {
                "simulator": _proc_cpu(self.simulator),
                "postgres": _tree_cpu(self.postmaster),
                "client": _children_cpu(),
                "harness": _self_cpu(),
            },
            _machine_busy(),
        )

    def _backends(self) -> set[int]:
        if self.postmaster is None:
            return set()
        with contextlib.suppress(psutil.Error):
            return {c.pid for c in psutil.Process(self.postmaster).children()}
        return set()

    def _settle(self, before: set[int]) -> None:
        """Wait (briefly) for the sessions opened during the step to end and be reaped: a
        backend's CPU moves into the postmaster's children times only once it is reaped."""
        deadline = time.monotonic() + 5
        while self._backends() - before and time.monotonic() < deadline:
            time.sleep(0.02)

    @contextlib.contextmanager
    def measure(self, label: str, client: str = "syncer", images: int = 0) -> Iterator[None]:
        backends = self._backends()
        w0, c0, m0 = self._snapshot()
        yield
        w1, m1 = time.perf_counter(), _machine_busy()
        self._settle(backends)
        _, c1, _ = self._snapshot()
        use = self.uses.setdefault(label, CpuUse(client))
        use.images += images
        use.wall += w1 - w0
        use.machine += m1 - m0
        for role in ROLES:
            use.seconds[role] += c1[role] - c0[role]


# ---- checks and results -----------------------------------------------------------------


@dataclass
class Check:
    figure: str
    text: str
    ok: bool
    values: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"[{'ok' if self.ok else 'MISS'}] {self.text}"


@dataclass
class SuiteResult:
    name: str
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, CpuUse] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def report(self, width: int) -> None:
        """Print the CPU line of every figure, then every check."""
        print("  cpu per figure (cores busy over its measured steps):")
        for label, use in self.cpu.items():
            print(f"    {label:<{width}} {use.line()}")
        for c in self.checks:
            print(f"  {c.line()}")

    def to_json(self) -> dict[str, Any]:
        return {
            "checks": [
                {"figure": c.figure, "ok": c.ok, "text": c.text, **c.values} for c in self.checks
            ],
            "figures": self.figures,
            "cpu": {k: v.to_json() for k, v in self.cpu.items()},
        }


# ---- PostgreSQL ------------------------------------------------------------------------


def db_dsn(admin_dsn: str, name: str) -> str:
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


async def create_database(admin_dsn: str, template: str, *, prefix: str = "bench") -> str:
    """A new database copied from ``template`` (file copy: quick, and no WAL per block)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
    finally:
        await conn.close()
    return name


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def vacuum_analyze(dsn: str) -> None:
    """What autovacuum would have done between two sweeps an hour apart; run by the harness so
    that it never runs (and is never counted) inside a measured sweep."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM (ANALYZE)")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


@dataclass
class Writes:
    """Rows written to the ims tables (pg_stat_user_tables), and WAL, between two points."""

    tuples: dict[str, int]  # table → inserted + updated + deleted
    wal_bytes: int

    @property
    def image_rows(self) -> int:
        return self.tuples.get("image_rows", 0)

    @property
    def events(self) -> int:
        return self.tuples.get("image_events", 0)

    @property
    def bookkeeping(self) -> int:
        return sum(v for k, v in self.tuples.items() if k not in ("image_rows", "image_events"))


async def write_counters(dsn: str) -> tuple[dict[str, int], str]:
    conn = await asyncpg.connect(dsn)
    try:
        # sessions that just ended report their counts as they exit: wait for them to be gone
        for _ in range(50):
            busy = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            if not busy:
                break
            await asyncio.sleep(0.1)
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = await conn.fetch(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS n FROM pg_stat_user_tables "
            "WHERE schemaname = 'ims'"
        )
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
        return {r["relname"]: int(r["n"]) for r in rows}, str(lsn)
    finally:
        await conn.close()


async def writes_between(
    dsn: str, before: tuple[dict[str, int], str], after: tuple[dict[str, int], str]
) -> Writes:
    conn = await asyncpg.connect(dsn)
    try:
        wal = int(
            await conn.fetchval(
                "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::bigint",
                after[1],
                before[1],
            )
        )
    finally:
        await conn.close()
    tuples = {k: v - before[0].get(k, 0) for k, v in after[0].items()}
    return Writes({k: v for k, v in tuples.items() if v}, wal)


async def sweep_seconds(dsn: str, passes: int) -> float:
    """Seconds from the first pass's start to the last pass's end of the newest sweep, as
    ``ims.sync_runs`` records them (the sweep itself, without the command's start-up)."""
    conn = await asyncpg.connect(dsn)
    try:
        return float(
            await conn.fetchval(
                "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM "
                "(SELECT * FROM ims.sync_runs ORDER BY id DESC LIMIT $1) newest",
                passes,
            )
        )
    finally:
        await conn.close()


def sync_command(config: Path | str, *, mode: str = "full") -> list[str]:
    return [
        sys.executable,
        "-m",
        "syncer",
        "--config",
        str(config),
        "--log-format",
        "json",
        "sync",
        "--once",
        "--mode",
        mode,
    ]


def run_sync(
    config: Path | str, *, mode: str = "full", env: dict[str, str] | None = None
) -> Measured:
    m = run_measured(sync_command(config, mode=mode), env=env)
    if m.returncode != 0:
        raise SystemExit(f"sync failed (exit {m.returncode}): {m.stderr.strip().splitlines()[-3:]}")
    return m
