"""The `syncer` command. The only module that prints; one error funnel turns any failure into
one line on stderr and a non-zero exit (``--debug`` shows the traceback instead)."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from syncer import __version__, logs
from syncer.config import Settings, load_settings, redact_dsn
from syncer.errors import ConfigError, SyncerError

T = TypeVar("T")
DEMO_REGIONS = ("cn-north-4", "ap-southeast-1", "eu-west-101")  # as syncer.demo.REGIONS
EXIT_DIFFERENT = 3  # `syncer verify`: the event log and the state disagree
out = Console()
err = Console(stderr=True)


class Ctx:
    def __init__(self, config: str | None, debug: bool) -> None:
        self.config_path, self.debug = config, debug
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
            logs.redact_secrets(self._settings.secrets())
            for warning in self._settings.warnings:
                logging.getLogger("syncer.config").warning(warning)
        return self._settings


def fail(message: str, code: int = 1) -> None:
    # scrubbed like a log line: whatever an error carries, no secret reaches the terminal
    line = logs.REDACTOR(" ".join(message.split()))
    err.print(f"syncer: {line}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(code)


def funnel(fn: Callable[..., T]) -> Callable[..., T]:
    """Every command goes through here: SyncerError → one line, exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        obj = click.get_current_context().find_object(Ctx)
        debug = obj is not None and obj.debug
        try:
            return fn(*args, **kwargs)
        except SyncerError as e:
            if debug:
                raise
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as e:  # a bug: still one line, with a pointer to the traceback
            if debug:
                raise
            fail(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)")
        raise AssertionError("unreachable")

    return wrapper


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def tune_gc() -> None:
    """For the long loops (sync, run): what start-up built (modules, settings) is never
    garbage, so the collector stops re-scanning it; and a page allocates thousands of
    short-lived containers freed by reference counting, so the youngest generation is
    collected every 50,000 allocations rather than every 700 (py-spy: the collector was 5% of
    a first sync)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "SYNCER"}
)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    envvar="SYNCER_CONFIG",
    show_envvar=True,
    help="TOML configuration file (see config.example.toml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "text", "json"]),
    default="auto",
    show_default=True,
    envvar="SYNCER_LOG_FORMAT",
    show_envvar=True,
    help="Log lines; auto = text on a terminal, JSON otherwise.",
)
@click.option("-v", "--verbose", count=True, help="More log detail (-v info, -vv debug).")
@click.version_option(__version__, prog_name="syncer")
@click.pass_context
def main(
    ctx: click.Context, config: str | None, debug: bool, log_format: str, verbose: int
) -> None:
    """Keep a local, queryable PostgreSQL copy of Huawei Cloud IMS image catalogs."""
    level = (
        logging.DEBUG
        if verbose >= 2
        else logging.INFO
        if verbose == 1 or ctx.invoked_subcommand in ("run", "simulate")
        else logging.WARNING
    )
    logs.configure(level, json=None if log_format == "auto" else log_format == "json")
    ctx.obj = Ctx(config, debug)


@main.command()
@click.pass_obj
@funnel
def migrate(obj: Ctx) -> None:
    """Bring the database schema to the newest revision (safe to run again)."""
    from syncer.store.migrate import migrate as do_migrate

    s = obj.settings
    result = run_async(do_migrate(s.database.dsn))
    where = redact_dsn(s.database.dsn)
    if result.before == result.after:
        out.print(f"schema already at revision {result.after} ({where})", highlight=False)
    else:
        out.print(
            f"schema migrated {result.before or 'empty'} → {result.after} ({where})",
            highlight=False,
        )
    if result.reader_role == "created":
        out.print(
            "created role ims_reader (SELECT on the ims surface); grant it to reporting logins"
        )
    elif result.reader_role == "missing":
        err.print(
            "syncer: note: role ims_reader does not exist and this login may not create roles; "
            "an administrator runs:",
            highlight=False,
        )
        click.echo(result.admin_sql)


@main.command()
@click.option("--once", is_flag=True, help="One pass over the partitions, then exit.")
@click.option("--mode", type=click.Choice(["full", "delta"]), default="full", show_default=True)
@click.option(
    "--region", "regions", multiple=True, metavar="R", help="Only this region (repeatable)."
)
@click.option(
    "--type",
    "image_types",
    multiple=True,
    metavar="T",
    type=click.Choice(["gold", "private", "shared", "market"]),
    help="Only this image type (repeatable).",
)
@click.pass_obj
@funnel
def sync(
    obj: Ctx, once: bool, mode: str, regions: tuple[str, ...], image_types: tuple[str, ...]
) -> None:
    """One pass over the configured partitions (--once), with a summary at the end."""
    if not once:
        fail("sync needs --once (the scheduled daemon is `syncer run`)", 2)
    from syncer.progress import sync_once

    tune_gc()
    results = run_async(sync_once(obj.settings, mode, regions, image_types, out))  # type: ignore[arg-type]
    sys.exit(0 if all(r.outcome == "ok" for r in results) else 1)


@main.command()
@click.option(
    "--stale-after",
    metavar="DURATION",
    help="A partition is stale when its last complete full sweep is older than this "
    '(e.g. "3h"; default: twice sync.full_interval).',
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of tables.")
@click.option(
    "--runs", default=10, show_default=True, type=click.IntRange(0), help="Last runs to list."
)
@click.pass_obj
@funnel
def status(obj: Ctx, stale_after: str | None, as_json: bool, runs: int) -> None:
    """Per-partition freshness and last passes. Exit status: 0 every configured partition
    fresh and ok, 3 some stale (none failing), 4 some failing (last pass failed), 1 the
    status could not be read."""
    from syncer.config import parse_duration
    from syncer.progress import show_status

    seconds = None
    if stale_after is not None:
        try:
            seconds = parse_duration(stale_after)
        except ValueError as e:
            fail(f"--stale-after: {e}", 2)
    code = run_async(
        show_status(obj.settings, out, stale_after=seconds, as_json=as_json, runs=runs)
    )
    sys.exit(code)


@main.command()
@click.option(
    "--show",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="Differences to list (all are counted).",
)
@click.pass_obj
@funnel
def verify(obj: Ctx, show: int) -> None:
    """Check that the event log replays to the state: ims.image_events, folded from the oldest
    retained event, must find exactly ims.images (status, tombstones, every field an event
    names). Exit status: 0 they agree; 3 they differ (a summary line, then the first
    differences); 1 the check could not run."""
    from syncer.store.verify import verify_database

    s = obj.settings
    report = run_async(
        verify_database(s.database.dsn, connect_timeout=s.database.connect_timeout, show=show)
    )
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else EXIT_DIFFERENT)


@main.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default)."
)
@click.option("--port", default=8787, show_default=True, type=int)
@click.option(
    "--regions", default="cn-north-4", show_default=True, help="Comma-separated regions to serve."
)
@click.option("--images-per-partition", default=1000, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--auth", type=click.Choice(["aksk", "token", "none"]), default="none", show_default=True
)
@click.option(
    "--change-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Changes per second per partition (creations, transitions, updates, deletions).",
)
@click.option("--faults", default="", help='Fault spec, e.g. "429:0.05,500:0.02,slow:0.1:2.0".')
@click.option(
    "--render-cache",
    default=250_000,
    show_default=True,
    type=click.IntRange(0),
    help="Serialized image objects kept for serving (0 = render every object every time).",
)
@funnel
def simulate(
    host: str,
    port: int,
    regions: str,
    images_per_partition: int,
    seed: int,
    auth: str,
    change_rate: float,
    faults: str,
    render_cache: int,
) -> None:
    """Serve the built-in IMS simulator (GET /{region}/v2/cloudimages)."""
    from syncer.simulator.server import run_simulator_cli

    run_simulator_cli(
        host=host,
        port=port,
        regions=[r.strip() for r in regions.split(",") if r.strip()],
        images_per_partition=images_per_partition,
        seed=seed,
        auth=auth,
        change_rate=change_rate,
        faults_spec=faults,
        render_cache=render_cache,
    )


@main.command()
@click.pass_obj
@funnel
def run(obj: Ctx) -> None:
    """The daemon: scheduler, change-feed HTTP server, health and metrics (stops on SIGTERM)."""
    from syncer.daemon import run_daemon

    tune_gc()

    run_async(run_daemon(obj.settings))


@main.group()
def feed() -> None:
    """The change feed over HTTP."""


@feed.command()
@click.option(
    "--since",
    metavar="C",
    help='Start after cursor C ("0": the oldest event kept); default: new events only.',
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    metavar="K",
    type=click.Choice(["created", "status_changed", "updated", "deleted", "restored"]),
    help="Only events of this kind (repeatable).",
)
@click.option(
    "--region",
    "regions",
    multiple=True,
    metavar="R",
    help="Only events of this region (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print each event as its JSON object.")
@click.option(
    "--url",
    metavar="URL",
    help="The feed's base URL; default: from [feed].listen of the configuration.",
)
@click.option(
    "--token",
    envvar="SYNCER_FEED_TOKEN",
    show_envvar=True,
    help="Bearer token (prefer the environment variable: a command line is visible to others).",
)
@click.pass_obj
@funnel
def tail(
    obj: Ctx,
    since: str | None,
    kinds: tuple[str, ...],
    regions: tuple[str, ...],
    as_json: bool,
    url: str | None,
    token: str | None,
) -> None:
    """Follow the feed, one line per event, resuming after disconnects (Last-Event-ID)."""
    from syncer.feed.tail import Event, base_url, describe, follow

    if url is None:
        try:
            settings = obj.settings
        except ConfigError as e:
            raise ConfigError(f"{e} (or pass --url)") from None
        url = base_url(settings.feed.listen)
        token = token or settings.feed.token

    async def run() -> None:
        async for item in follow(url, token=token or "", since=since, kinds=kinds, regions=regions):
            if isinstance(item, Event):
                click.echo(item.data if as_json else describe(item.data))
            else:
                err.print(f"syncer: {item.text}", markup=False, highlight=False, soft_wrap=True)

    try:
        run_async(run())
    except KeyboardInterrupt:
        sys.exit(0)


@main.command()
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop by itself after this long (default: run until Ctrl-C or SIGTERM).",
)
@click.option(
    "--images-per-partition",
    default=300,
    show_default=True,
    type=click.IntRange(0, 20_000),
    help="Images the simulator starts each partition with.",
)
@click.option(
    "--change-rate",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 100),
    help="The simulated catalog's changes per second per partition.",
)
@click.option(
    "--regions",
    default=",".join(DEMO_REGIONS),
    show_default=True,
    help="Comma-separated regions to simulate (four image types each).",
)
@click.option(
    "--port",
    default=0,
    type=click.IntRange(0, 65535),
    help="The daemon's HTTP port on 127.0.0.1 (status page, feed); default: a free one.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the demo keeps its database and catalog between runs "
    "(default: ~/.local/share/syncer/demo; as root /var/lib/syncer/demo).",
)
@click.option("--reset", is_flag=True, help="Forget the data of earlier runs first.")
@click.option(
    "--plain", is_flag=True, help="Plain progress lines even on a terminal (no live view)."
)
@funnel
def demo(
    duration: float | None,
    images_per_partition: int,
    change_rate: float,
    regions: str,
    port: int,
    data_dir: Path | None,
    reset: bool,
    plain: bool,
) -> None:
    """Everything on this machine, live, with no set-up: a private PostgreSQL, the simulator
    with a living catalog, the daemon with its change feed and status page. Ctrl-C stops it
    all; running it again carries on with the same data."""
    from syncer.demo import DemoOptions, run_demo

    names = tuple(dict.fromkeys(r.strip() for r in regions.split(",") if r.strip()))
    if not names:
        fail("--regions: name at least one region", 2)
    run_demo(
        out,
        DemoOptions(
            data_dir=data_dir,
            images_per_partition=images_per_partition,
            change_rate=change_rate,
            regions=names,
            port=port,
            duration=duration,
            reset=reset,
            live=False if plain else None,
        ),
    )


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t
