"""A process serving the change feed alone, from a syncer configuration, until SIGTERM.

    python -m bench.feed_server --config syncer.toml

The feed benchmark starts this (or, with ``BENCH_FEED_SERVER=run``, `syncer run`, once the
daemon exists): both read the same configuration and serve /v1/ on ``[feed].listen``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiohttp import web

from syncer.config import load_settings
from syncer.feed import Feed, check_listen


async def serve(config: str) -> None:
    settings = load_settings(config)
    check_listen(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/healthz", healthz)
    async with Feed(settings) as feed:
        feed.install(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.feed.host, settings.feed.port).start()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feed_server")
    parser.add_argument("--config", required=True)
    asyncio.run(serve(parser.parse_args().config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
