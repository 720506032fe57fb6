"""The daemon's HTTP server (aiohttp.web): operational routes now, the change feed's ``/v1/``
and the status page ``/`` later, all on ``[feed].listen``."""

from syncer.web.server import (
    READINESS_TIMEOUT,
    ListenError,
    Listening,
    Readiness,
    build_app,
    serve,
)

__all__ = ["READINESS_TIMEOUT", "ListenError", "Listening", "Readiness", "build_app", "serve"]
