"""`syncer run` as a subprocess, for acceptance tests: a config, start, HTTP probes, signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from syncer.store.verify import verify_replay


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else orjson.dumps(v).decode()


def daemon_config(
    path: Path,
    *,
    dsn: str,
    endpoint: str,
    regions: list[str],
    port: int,
    auth: str = "none",
    page_size: int = 50,
    **sync: Any,
) -> Path:
    """A TOML config for one daemon (seconds-scale intervals unless ``sync`` says otherwise)."""
    values: dict[str, Any] = {
        "full_interval": "3s",
        "delta_interval": "1s",
        "delta_overlap": "1s",
        "lease_ttl": "3s",
        "stop_timeout": "20s",
    } | sync
    extra = "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
    path.write_text(
        f"""
[database]
dsn = "{dsn}"
[api]
endpoint = "{endpoint}"
auth = "{auth}"
page_size = {page_size}
max_attempts = 3
request_timeout = 5
[sync]
regions = {orjson.dumps(regions).decode()}
{extra}
[feed]
listen = "127.0.0.1:{port}"
"""
    )
    return path


def daemon_for(
    tmp_path: Path, db: str, sim: Any, regions: list[str], name: str, **sync: Any
) -> Daemon:
    """A daemon (not started) syncing ``regions`` of the in-process simulator ``sim`` into
    ``db``, on a free port, its config and log named after ``name`` in ``tmp_path``."""
    config = daemon_config(
        tmp_path / f"{name}.toml",
        dsn=db,
        endpoint=sim.endpoint_template,
        regions=regions,
        port=free_port(),
        **sync,
    )
    return Daemon(config, tmp_path / f"{name}.log")


class Daemon:
    """One `syncer run` process; its log goes to a file (read it with ``log()``)."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        port = next(
            line.split(":")[-1].strip().strip('"')
            for line in config.read_text().splitlines()
            if line.startswith("listen")
        )
        self.url = f"http://127.0.0.1:{port}"

    async def start(self) -> Daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "HUAWEICLOUD_"))}
        env.update(self.env)
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "syncer",
            "--config",
            str(self.config),
            "--log-format",
            "json",
            "run",
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s,
            s.get(self.url + path) as r,
        ):
            return r.status, await r.text()

    async def wait_ready(self, within: float = 30) -> None:
        await until(lambda: self._ready(), within, f"daemon not ready: {self.log()[-3000:]}")

    async def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log()[-3000:]}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            status, _ = await self.get("/readyz")
            return status == 200
        return False

    async def stop(self, sig: int = signal.SIGTERM, within: float = 40) -> tuple[int, float]:
        """Send ``sig``; the exit status and how long the exit took."""
        assert self.proc is not None
        began = time.monotonic()
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        rc = await asyncio.wait_for(self.proc.wait(), within)
        return rc, time.monotonic() - began

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)


async def until(
    check: Callable[[], Any], within: float, message: str = "condition", step: float = 0.2
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; its value."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s: {message}")
        await asyncio.sleep(step)


async def overlapping_runs(conn: asyncpg.Connection | asyncpg.Pool) -> list[Any]:
    """Pairs of runs of one partition whose [started_at, finished_at] intervals overlap."""
    return list(
        await conn.fetch(
            "SELECT a.id, b.id, a.region, a.image_type, a.worker, b.worker"
            " FROM ims.sync_runs a JOIN ims.sync_runs b"
            " ON a.region = b.region AND a.image_type = b.image_type AND a.id < b.id"
            " WHERE tstzrange(a.started_at, coalesce(a.finished_at, 'infinity'))"
            " && tstzrange(b.started_at, coalesce(b.finished_at, 'infinity'))"
        )
    )


async def assert_events_replay_to_the_state(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    """The event log, folded over the state from its oldest retained event, finds exactly the
    rows: each image's status, liveness and every field an event names; no event missing or
    doubled (syncer.store.verify, the check of `syncer verify`)."""
    report = await verify_replay(conn)
    assert report.ok, "\n".join(report.lines())
