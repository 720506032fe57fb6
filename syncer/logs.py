"""Logging set-up, chosen by the CLI: readable lines on a terminal, JSON lines otherwise.

Library code logs a short message plus structured fields (``extra={"partition": ...}``); this
module is the only place that decides how they look.

Secrets: no code logs one on purpose (the IMS client scrubs what servers echo back), and as a
last line of defence every formatted line goes through a ``Redactor`` before it is written:
the known secrets of this process (``redact_secrets(...)``: AK, SK, tokens, passwords, the DSN's
password — the CLI registers them once the configuration is loaded) and anything shaped like
one (a password in a URL or a ``password=`` DSN, a signed ``Authorization`` header, an IAM
token) become ``***``, in the message, its fields and an exception's text alike.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

MASK = "***"
_MIN_SECRET = 4  # shorter values would mask ordinary text (and guess nothing)

_SHAPES = (
    # a password in a URL: scheme://user:PASSWORD@host
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@\"']*:)[^\s@/\"']+(?=@)"), r"\1" + MASK),
    # libpq key=value DSNs and the like: password=..., passwd: ...
    (re.compile(r"(?i)\b(passw(?:or)?d\s*[=:]\s*)('[^']*'|[^\s\"',;&]+)"), r"\1" + MASK),
    # a signed Authorization header: the access key and the signature
    (re.compile(r"(SDK-HMAC-SHA256\s+Access=)[^\s,\"']+"), r"\1" + MASK),
    (re.compile(r"(Signature=)[0-9a-fA-F]{16,}"), r"\1" + MASK),
    # tokens: X-Auth-Token / X-Subject-Token values, Bearer tokens, IAM tokens (MII...)
    (re.compile(r"(?i)(x-(?:auth|subject)-token[\"']?\s*[:=]\s*[\"']?)[^\s\"',]+"), r"\1" + MASK),
    (re.compile(r"(?i)(Bearer\s+)[^\s\"',]+"), r"\1" + MASK),
    (re.compile(r"MII[A-Za-z0-9+/=_-]{40,}"), MASK),
)


class Redactor:
    """Replaces known secrets and secret-shaped text in a formatted log line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            known = set(self._secrets)
            for secret in secrets:
                if secret and len(secret) >= _MIN_SECRET:
                    known.add(secret)
                    # as it appears inside a JSON string (quotes, backslashes escaped)
                    known.add(orjson.dumps(secret).decode()[1:-1])
            # longest first, so that a secret containing another is masked whole
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text


REDACTOR = Redactor()


def redact_secrets(secrets: Iterable[str]) -> None:
    """Register values that must never reach a log line (process-wide)."""
    REDACTOR.add(secrets)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


def _error(record: logging.LogRecord) -> str | None:
    if record.exc_info and record.exc_info[1] is not None:
        return f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_fields(record))
        if (error := _error(record)) is not None:
            doc["error"] = error
        return REDACTOR(orjson.dumps(doc, default=str).decode())


class LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if (error := _error(record)) is not None and "error" not in fields:
            fields["error"] = error
        text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{ts} {record.levelname:<7} {record.getMessage()}" + (f"  {text}" if text else "")
        return REDACTOR(" ".join(line.splitlines()))


def configure(
    level: int = logging.INFO, *, json: bool | None = None, stream: TextIO | None = None
) -> None:
    """One handler on the root logger: JSON lines unless ``stream`` (stderr) is a terminal."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json else LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("asyncio", "aiohttp.access", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # APScheduler logs every job run at INFO, and a skipped or failed one at WARNING/ERROR;
    # the daemon logs what matters of those itself (syncer.daemon.scheduler).
    logging.getLogger("apscheduler").setLevel(max(level, logging.CRITICAL))
