"""`syncer demo` (the README's first command) on a bare machine, as a new user runs it.

System PostgreSQL hidden (the pgserver wheel's server is used), the clone — HOME, TMPDIR, the
wheel — in a folder of mode 0700 (like /root): the demo starts its private PostgreSQL, the
simulator's living catalog, the real daemon with its feed and status page. The test waits until
events flow, queries the database, the feed and the status page, presses Ctrl-C (SIGINT to the
demo's process group, as a terminal does), and checks that the stop was orderly, that every
process of the demo's tree is gone and every port it listened on is closed. A second run
(bounded by --duration) reuses the data: the simulator resumes the catalog the first run left
(never one regenerated from the seed, which would undo the first run's changes), and the
database starts out synced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import psutil
import pytest

from tests.acceptance.test_cli import one_line_error, syncer
from tests.integration.test_embedded import LOCKED_MODE, copy_wheel_into

NO_SYSTEM_POSTGRES = {"SYNCER_PG_BINARIES": "pgserver", "PATH": "/usr/bin:/bin"}
REGIONS = ["cn-north-4", "ap-southeast-1"]
PARTITIONS = len(REGIONS) * 4
IMAGES = 40


class Demo:
    """`syncer demo` as a subprocess; its stdout collected line by line as it comes."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "HUAWEICLOUD_"))
        }
        full_env.update(env)
        self.stderr_path = cwd / f"demo-{time.monotonic_ns()}.err"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncer", *args],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=full_env,
                cwd=cwd,
                start_new_session=True,  # its own process group, as a terminal's job is
            )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if found := regex.search(line):
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no line matching {pattern!r} (exit {self.proc.poll()}):\n"
                        f"{self.output[-4000:]}\n--- stderr:\n{self.stderr()[-4000:]}"
                    )
                self._changed.wait(min(left, 1.0))

    def tree(self) -> list[psutil.Process]:
        me = psutil.Process(self.proc.pid)
        return [me, *me.children(recursive=True)]

    def ctrl_c(self) -> None:
        """What Ctrl-C at a terminal does: SIGINT to every process of the foreground group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            for p in reversed(self.tree()):
                with contextlib.suppress(psutil.Error):
                    p.kill()
        self.proc.wait(10)


def listening_ports(procs: list[psutil.Process]) -> set[int]:
    ports = set()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    ports.add(c.laddr.port)
    return ports


def still_running(procs: list[psutil.Process]) -> list[str]:
    alive = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{p.pid} {p.name()}")
    return alive


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def bare_machine(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, Path]]:
    """(environment, a private working folder, a data directory): HOME, TMPDIR and the pgserver
    wheel (first on PYTHONPATH, as in a venv inside the clone) in a folder of mode 0700. The
    data directory is one the server's OS user can reach (what --data-dir asks for; by default
    the demo uses persistent_data_dir("demo"), which the test must not touch)."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "tmp").mkdir(mode=0o700)
    copy_wheel_into(private / "site")
    env = {
        **NO_SYSTEM_POSTGRES,
        "HOME": str(private),
        "TMPDIR": str(private / "tmp"),
        "PYTHONPATH": str(private / "site"),
        "COLUMNS": "400",  # one line per message, paths whole
    }
    outside = Path(tempfile.mkdtemp(prefix="syncer-demo-test-", dir="/tmp"))
    outside.chmod(0o755)
    try:
        yield env, private, outside / "demo"
    finally:
        shutil.rmtree(outside, ignore_errors=True)


async def get_json(url: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
        s.get(url) as r,
    ):
        return r.status, orjson.loads(await r.read())


async def one_new_event(url: str, within: float) -> dict[str, Any]:
    """The first event the SSE stream delivers after connecting (at the head)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as s,
        s.get(url + "/v1/events/stream") as r,
    ):
        assert r.status == 200 and r.content_type == "text/event-stream"
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data:"):
                return dict(orjson.loads(line[5:]))
    raise AssertionError("the stream ended")


async def check_running_demo(dsn: str, url: str) -> dict[str, str]:
    """Events flow, and the database, the feed and the status page agree. Returns the live
    images' updated_at as the database has them now."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        deadline = time.monotonic() + 90
        while True:
            swept = await conn.fetchval(
                "SELECT count(DISTINCT (region, image_type)) FROM ims.sync_runs"
                " WHERE outcome = 'ok'"
            )
            if swept == PARTITIONS:
                break
            assert time.monotonic() < deadline, f"{swept} of {PARTITIONS} partitions swept"
            await asyncio.sleep(0.5)
        # the living catalog: events keep coming after the first sweeps
        event = await one_new_event(url, within=30)
        assert event["kind"] in ("created", "status_changed", "updated", "deleted")
        in_db = await conn.fetchrow(
            "SELECT kind, region, image_id FROM ims.image_events WHERE seq = $1", event["seq"]
        )
        assert in_db is not None and dict(in_db) == {
            k: event[k] for k in ("kind", "region", "image_id")
        }
        live = await conn.fetchval("SELECT count(*) FROM ims.current_images")
        assert live >= PARTITIONS * IMAGES * 0.8, live

        status, page = await get_json(url + "/v1/events?since=0&limit=5")
        assert status == 200 and len(page["events"]) == 5 and page["events"][0]["seq"] >= 1
        async with aiohttp.ClientSession() as s, s.get(url + "/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert "/v1/status" in await r.text()
        status, doc = await get_json(url + "/v1/status")
        assert status == 200, doc
        assert len(doc["partitions"]) == PARTITIONS
        assert {p["state"] for p in doc["partitions"]} <= {"ok", "stale"}
        assert abs(doc["live_images"] - live) < PARTITIONS * IMAGES * 0.2

        rows = await conn.fetch(
            "SELECT region || '/' || image_id AS key, raw->>'updated_at' AS updated_at"
            " FROM ims.current_images"
        )
        return {r["key"]: r["updated_at"] for r in rows}
    finally:
        await conn.close()


async def list_simulator(base: str) -> dict[str, str]:
    """Every image the simulator lists now: region/id → updated_at."""
    listed: dict[str, str] = {}
    async with aiohttp.ClientSession() as s:
        for region in REGIONS:
            for image_type in ("gold", "private", "shared", "market"):
                url = f"{base}/{region}/v2/cloudimages?__imagetype={image_type}&limit=1000"
                async with s.get(url) as r:
                    assert r.status == 200
                    images = orjson.loads(await r.read())["images"]
                assert len(images) < 1000
                listed.update({f"{region}/{i['id']}": i["updated_at"] for i in images})
    return listed


def test_demo_lives_until_interrupted_and_leaves_nothing_behind(
    bare_machine: tuple[dict[str, str], Path, Path],
) -> None:
    env, private, data_dir = bare_machine
    args = [
        "demo",
        "--data-dir",
        str(data_dir),
        "--regions",
        ",".join(REGIONS),
        "--images-per-partition",
        str(IMAGES),
    ]

    # -- the first run: until events flow, then SIGINT ---------------------------------------
    demo = Demo([*args, "--change-rate", "1"], env, private)
    try:
        pg_port = int(demo.wait_for(r"psql -h 127\.0\.0\.1 -p (\d+) -U postgres postgres")[1])
        url = demo.wait_for(r"status page\s+(http://127\.0\.0\.1:\d+)/")[1]
        demo.wait_for(r"change feed\s+curl -N http://127\.0\.0\.1:\d+/v1/events/stream")
        demo.wait_for(r"syncer feed tail --url http://127\.0\.0\.1:\d+")
        used = Path(demo.wait_for(r"\(pgserver binaries: (\S+)\)")[1])
        if os.geteuid() == 0:  # the wheel inside the private folder: a reachable copy runs
            assert not used.is_relative_to(private)
        else:
            assert used.is_relative_to(private)
        sim_port = int(demo.wait_for(r"IMS simulator on http://127\.0\.0\.1:(\d+)/")[1])
        dsn = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
        before = asyncio.run(check_running_demo(dsn, url))

        tree = demo.tree()
        assert len(tree) > 2, tree  # the demo and its PostgreSQL processes
        ports = listening_ports(tree)
        http_port = int(url.rsplit(":", 1)[1])
        assert {pg_port, sim_port, http_port} <= ports, ports

        demo.ctrl_c()
        assert demo.wait(60) == 0, demo.stderr()
    finally:
        if demo.proc.poll() is None:
            demo.kill()
    assert "stopped after" in demo.output
    # an orderly stop: the daemon before the database (which a Ctrl-C does not reach)
    for trouble in ("Traceback", "shutting down", "listener", "pass failed"):
        assert trouble not in demo.stderr(), demo.stderr()
    assert not still_running(tree), still_running(tree)
    assert not [p for p in ports if port_open(p)], ports

    # -- a second run (bounded) carries on with the same data --------------------------------
    again = Demo([*args, "--change-rate", "0", "--duration", "3"], env, private)
    try:
        again.wait_for(
            r"simulator: catalog resumed from .*simulator-catalog\.json, as the last run left it"
        )
        sim = again.wait_for(r"IMS simulator on (http://127\.0\.0\.1:\d+)/")[1]
        listed = asyncio.run(list_simulator(sim))
        url = again.wait_for(r"status page\s+(http://127\.0\.0\.1:\d+)/")[1]
        tree = again.tree()
        ports = listening_ports(tree)
        assert again.wait(60) == 0, again.stderr()
    finally:
        if again.proc.poll() is None:
            again.kill()
    # The catalog is the one the first run left, not the seed's again: nothing the first run
    # synced is older in it, and the images its life created are still there.
    common = before.keys() & listed.keys()
    assert len(common) >= len(before) * 0.9, (len(common), len(before))
    older = [k for k in common if listed[k] < before[k]]
    assert not older, older[:5]
    # the seed's catalog dates its images up to 2024-06-01; life dates its changes now
    changed_by_life = [k for k in common if before[k] > "2024-06-02"]
    assert changed_by_life, "the first run's life changed nothing the database saw"
    assert "stopped after" in again.output
    assert not still_running(tree), still_running(tree)
    assert not [p for p in ports if port_open(p)], ports


def test_demo_without_postgresql_or_the_wheel_says_how_to_get_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCER_")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",  # as if pgserver were not installed: an import of it fails, find_spec says None
            "import sys; sys.modules['pgserver'] = None; from syncer.cli import main; main()",
            "demo",
        ],
        capture_output=True,
        text=True,
        env={**env, **NO_SYSTEM_POSTGRES},
        timeout=60,
    )
    line = one_line_error(done)
    assert "no PostgreSQL binaries found" in line
    assert "pip install 'syncer[embedded]'" in line


def test_demo_with_unreachable_binaries_is_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    (locked / "bin").mkdir(parents=True)
    for name in ("initdb", "postgres"):
        (locked / "bin" / name).write_text("#!/bin/sh\nexit 1\n")
        (locked / "bin" / name).chmod(0o755)
    locked.chmod(LOCKED_MODE)
    try:
        done = syncer("demo", env={"SYNCER_PG_BIN": str(locked / "bin")})
    finally:
        locked.chmod(0o700)
    line = one_line_error(done)
    assert "internal error" not in line
    assert str(locked / "bin" / "initdb") in line
