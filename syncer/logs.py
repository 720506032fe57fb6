"""Logging set-up, chosen by the CLI: readable lines on a terminal, JSON lines otherwise.

Library code logs a short message plus structured fields (``extra={"partition": ...}``); this
module is the only place that decides how they look.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info and record.exc_info[1] is not None:
            doc["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return orjson.dumps(doc, default=str).decode()


class LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items() if v is not None)
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        return f"{ts} {record.levelname:<7} {record.getMessage()}" + (
            f"  {fields}" if fields else ""
        )


def configure(level: int = logging.INFO, *, json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("asyncio", "aiohttp.access", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
