"""The daemon's HTTP server (aiohttp.web): operational routes, the status page ``/``; the
change feed adds ``/v1/``, all on ``[feed].listen``."""

from syncer.web.server import (
    READINESS_TIMEOUT,
    ListenError,
    Listening,
    Readiness,
    build_app,
    serve,
)
from syncer.web.status import StatusSource, status_routes

__all__ = [
    "READINESS_TIMEOUT",
    "ListenError",
    "Listening",
    "Readiness",
    "StatusSource",
    "build_app",
    "serve",
    "status_routes",
]
