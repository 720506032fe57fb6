"""`syncer demo`: the whole system on this machine, live, with no set-up.

One process (and its PostgreSQL children) runs everything:

1. a private PostgreSQL (``syncer.store.embedded``: system binaries if present, else the
   ``pgserver`` wheel's) in a data directory kept between runs
   (``persistent_data_dir("demo")``), migrated;
2. the IMS simulator with a living catalog (``change_rate`` changes per second per partition:
   uploads moving queued → saving → active or killed, renames, tag and field changes,
   deletions) over a few regions, on 127.0.0.1;
3. the real daemon, ``run_daemon`` — scheduler, full sweeps and delta polls, the change feed,
   the status page, ``/healthz``, ``/readyz``, ``/metrics`` — on a free port of 127.0.0.1;
4. a live terminal view (plain lines when stdout is not a terminal) of the partitions sweeping,
   live counts, freshness and the events as they are committed.

SIGINT (Ctrl-C) or SIGTERM — or ``duration`` — stops it all in order: the catalog's life
pauses, the daemon stops (running passes roll back, streams end), the simulator's catalog is
saved, the simulator and the HTTP server close their sockets, PostgreSQL shuts down. No process
or listening port is left behind.

Running it again reuses the data. The database keeps every image, event and run; the
simulator's catalog is saved beside it (``simulator-catalog.json``, also every few seconds)
and resumed, so the next run lists exactly what the last one listed and its life carries on
from there: the first sweep of the next run finds nothing new but the changes made after the
last pass of the previous run, and every event after that is a new change. (A catalog made
with other parameters — regions, images per partition — starts again from its seed, and the
database sees the difference as changes; ``--reset`` starts over.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live

from syncer import logs
from syncer.config import IMAGE_TYPES, Settings, settings_from_mapping
from syncer.daemon import run_daemon
from syncer.demo_view import LiveView, PlainView, Tick, kinds_text
from syncer.freshness import judge
from syncer.simulator import Catalog, Simulator
from syncer.simulator import snapshot as catalog_snapshot
from syncer.store.embedded import EmbeddedPostgres, persistent_data_dir
from syncer.store.migrate import migrate
from syncer.store.pool import SESSION_ERRORS, describe_session_error, pool_session
from syncer.store.status import partition_records
from syncer.store.watch import FinishedRuns, events_after, head_seq
from syncer.sync.partitions import plan_partitions

log = logging.getLogger(__name__)

REGIONS = ("cn-north-4", "ap-southeast-1", "eu-west-101")
SEED = 7
SNAPSHOT = "simulator-catalog.json"
SAVE_EVERY = 10.0  # seconds between two saves of the living catalog
TICK = 0.5  # seconds between two looks at the database
STOP_TIMEOUT = 10.0  # the daemon's bound on stopping its passes


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path | None = None  # None: persistent_data_dir("demo")
    images_per_partition: int = 300
    change_rate: float = 0.2
    regions: tuple[str, ...] = REGIONS
    port: int = 0  # the daemon's HTTP port; 0: a free one
    duration: float | None = None  # None: until SIGINT/SIGTERM
    reset: bool = False
    live: bool | None = None  # None: a live view when stdout is a terminal


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_settings(dsn: str, endpoint: str, regions: tuple[str, ...], port: int) -> Settings:
    """The daemon's configuration: seconds-scale intervals, so a person sees it work."""
    env = {k: v for k, v in os.environ.items() if k == "SYNCER_FEED_TOKEN"}
    return settings_from_mapping(
        {
            "database": {"dsn": dsn},
            "api": {
                "endpoint": endpoint,
                "auth": "none",
                "page_size": 100,
                "max_attempts": 3,
                "request_timeout": 10,
            },
            "sync": {
                "regions": list(regions),
                "full_interval": "20s",
                "delta_interval": "2s",
                "delta_overlap": "2s",
                "lease_ttl": "10s",
                "stop_timeout": f"{STOP_TIMEOUT:g}s",
            },
            "feed": {"listen": f"127.0.0.1:{port}"},
        },
        env,
        "<demo>",
    )


def run_demo(console: Console, options: DemoOptions) -> None:
    """Run until SIGINT/SIGTERM (or ``options.duration``); raises SyncerError (one line) when
    something cannot start."""
    data_dir = (options.data_dir or persistent_data_dir("demo")).absolute()
    if options.reset:
        _reset(data_dir)
    with _sigterm_interrupts(), EmbeddedPostgres(data_dir) as pg:
        asyncio.run(_run(console, options, pg, data_dir))


def _reset(data_dir: Path) -> None:
    """Forget the data of earlier runs (only what the demo itself put there)."""
    shutil.rmtree(data_dir / "data", ignore_errors=True)
    for name in (SNAPSHOT, "postgres.log"):
        with contextlib.suppress(FileNotFoundError):
            (data_dir / name).unlink()


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While PostgreSQL starts (before the event loop handles signals), SIGTERM interrupts as
    SIGINT does, so the server started so far is stopped on the way out."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _load_catalog(
    options: DemoOptions, path: Path, say: Callable[[str], None]
) -> tuple[Catalog, int]:
    """The catalog of the last run, resumed (and this run's number, from 0), else a new one."""
    try:
        loaded = catalog_snapshot.load(
            path,
            regions=options.regions,
            image_types=IMAGE_TYPES,
            images_per_partition=options.images_per_partition,
            seed=SEED,
        )
    except ValueError as e:
        say(f"simulator: {e}: starting a new catalog from seed {SEED} (--reset starts over)")
        loaded = None
    if loaded is not None:
        catalog, generation = loaded
        say(
            f"simulator: catalog resumed from {path}, as the last run left it "
            f"({catalog.changes:,} changes since seed {SEED})"
        )
        return catalog, generation + 1
    catalog = Catalog(
        regions=options.regions, images_per_partition=options.images_per_partition, seed=SEED
    )
    return catalog, 0


async def _run(
    console: Console, options: DemoOptions, pg: EmbeddedPostgres, data_dir: Path
) -> None:
    plain = PlainView(console)
    say = plain.say
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    began = time.monotonic()
    try:
        say(
            f"PostgreSQL on 127.0.0.1:{pg.port} ({pg.binaries.source} binaries: "
            f"{pg.binaries.bin_dir}), data in {data_dir} (kept between runs)"
        )
        await migrate(pg.dsn)
        snapshot_path = data_dir / SNAPSHOT
        catalog, generation = _load_catalog(options, snapshot_path, say)
        async with Simulator(
            catalog=catalog,
            seed=SEED * 1000 + generation,  # life's choices: new in every run
            change_rate=options.change_rate,
            keep_requests=1000,
        ) as sim:
            n = options.images_per_partition
            say(
                f"IMS simulator on {sim.endpoint_template}: {len(options.regions)} regions × "
                f"{len(IMAGE_TYPES)} image types × ~{n:,} images, about "
                f"{options.change_rate:g} changes/s per partition"
            )
            settings = demo_settings(
                pg.dsn, sim.endpoint_template, options.regions, options.port or free_port()
            )
            async with (
                _catalog_saver(catalog, snapshot_path, n, generation),
                _daemon(settings, sim) as daemon,
            ):
                await _listening(settings.feed.port, daemon, stop)
                _print_addresses(say, settings, pg.port)
                counts = await _watch(console, options, settings, pg.dsn, stop, daemon)
        say(
            f"stopped after {time.monotonic() - began:.0f}s: {sum(counts.values()):,} events "
            f"this run{' (' + kinds_text(counts) + ')' if counts else ''}; everything is shut "
            f"down. The data stays in {data_dir}: `syncer demo` again carries on, "
            "`syncer demo --reset` starts over."
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _listening(port: int, daemon: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Wait until the daemon's HTTP server answers /healthz (raise its error if it cannot
    listen: someone else's server on the port must not pass for it), or until ``stop``."""
    while not daemon.done() and not stop.is_set():
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    answer = await reader.read(4096)
                finally:
                    writer.close()
                status_line = answer.partition(b"\r\n")[0].split()
                if status_line[1:2] == [b"200"] and answer.endswith(b'{"status": "ok"}'):
                    return
        await asyncio.wait([daemon], timeout=0.1)
    if daemon.done():
        daemon.result()


def _print_addresses(say: Callable[[str], None], settings: Settings, pg_port: int) -> None:
    url = f"http://127.0.0.1:{settings.feed.port}"
    auth = ' -H "Authorization: Bearer $SYNCER_FEED_TOKEN"' if settings.feed.token else ""
    say(f"daemon: full sweep every 20s and delta poll every 2s per partition, serving on {url}")
    say(f"  status page   {url}/")
    say(f"  change feed   curl -N{auth} {url}/v1/events/stream")
    say(f"                syncer feed tail --url {url}")
    say(f"  database      psql -h 127.0.0.1 -p {pg_port} -U postgres postgres")
    say(f"  health        {url}/readyz   {url}/metrics")
    say("Ctrl-C stops everything; the data is kept for the next run.")


@contextlib.asynccontextmanager
async def _catalog_saver(
    catalog: Catalog, path: Path, images_per_partition: int, generation: int
) -> AsyncIterator[None]:
    """Save the living catalog every SAVE_EVERY seconds and once more on the way out."""

    one_at_a_time = asyncio.Lock()  # so that an older snapshot never replaces a newer one

    async def save() -> None:
        async with one_at_a_time:
            # taken in the event loop (where life changes the catalog), written in a thread
            data = catalog_snapshot.dumps(catalog, images_per_partition, generation=generation)
            try:
                await asyncio.to_thread(catalog_snapshot.write, path, data)
            except OSError as e:
                log.warning("could not save the simulator's catalog", extra={"error": str(e)})

    async def every() -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY)
            await asyncio.shield(save())  # a write under way finishes before the last one

    task = asyncio.create_task(every(), name="demo-catalog-saver")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await save()


@contextlib.asynccontextmanager
async def _daemon(settings: Settings, sim: Simulator) -> AsyncIterator[asyncio.Task[None]]:
    """``run_daemon`` in this process; on the way out the catalog's life pauses first (the
    changes after the daemon's last pass stay in the saved catalog, for the next run to find),
    then the daemon stops, before the simulator it talks to closes."""
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_daemon(settings, stop=stop, handle_signals=False), name="demo-daemon"
    )
    try:
        yield task
    finally:
        sim.change_rate = 0
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT + 10)
        if not task.done():  # pragma: no cover - the daemon bounds its own stop
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _watch(
    console: Console,
    options: DemoOptions,
    settings: Settings,
    dsn: str,
    stop: asyncio.Event,
    daemon: asyncio.Task[None],
) -> Counter[str]:
    """Show what happens until ``stop`` (or the duration, or the daemon ending on an error,
    which is raised). Returns the events of this run by kind."""
    configured = [(p.region, p.image_type) for p in plan_partitions(settings)]
    stale_after = 2 * settings.sync.full_interval
    live = console.is_terminal if options.live is None else options.live
    view: PlainView | LiveView = LiveView("Ctrl-C stops everything") if live else PlainView(console)
    counts: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    deadline = None if options.duration is None else loop.time() + options.duration
    async with pool_session(dsn, size=2, lazy=True) as pool, _live(console, view) as refresh:
        cursor = await head_seq(pool)
        runs = FinishedRuns()
        await runs.skip_past(pool)
        while not stop.is_set() and not daemon.done():
            try:
                records = await partition_records(pool)
                finished = await runs.poll(pool)
                events = await events_after(pool, cursor)
            except SESSION_ERRORS as e:
                log.warning(
                    "demo: cannot read the database", extra={"error": describe_session_error(e)}
                )
            else:
                cursor = events.last_seq
                counts.update(events.by_kind)
                health = judge(records, configured, stale_after=stale_after)
                view.update(Tick(health, finished, events.by_kind, events.newest))
                refresh()
            timeout = TICK if deadline is None else min(TICK, deadline - loop.time())
            if timeout <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout)
    if daemon.done():
        daemon.result()  # the daemon could not run: its one-line reason
    plain = PlainView(console)
    plain.say("stopping: the catalog's life pauses, the daemon stops its passes …")
    return counts


@contextlib.asynccontextmanager
async def _live(console: Console, view: PlainView | LiveView) -> AsyncIterator[Callable[[], None]]:
    """A rich Live for a LiveView (log lines printed above it), nothing for plain lines."""
    if not isinstance(view, LiveView):
        yield lambda: None
        return
    with Live(view.render(), console=console, refresh_per_second=4, redirect_stderr=True) as live:
        # log records (warnings) go above the live view instead of through it
        logs.configure(logging.WARNING, json=False, stream=sys.stderr)
        try:
            yield lambda: live.update(view.render())
        finally:
            logs.configure(logging.WARNING, json=False, stream=sys.__stderr__)
