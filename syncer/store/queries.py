"""The named SQL blocks of the package's ``*.sql`` files (queries.sql, status.sql), loaded once."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.M)


@cache
def load() -> dict[str, str]:
    blocks: dict[str, str] = {}
    sources = sorted(
        (f for f in files("syncer.store").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    for source in sources:
        parts = _NAME.split(source.read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in blocks:
                raise RuntimeError(f"query {name} is defined twice ({source.name})")
            blocks[name] = body.strip()
    return blocks


def sql(name: str) -> str:
    return load()[name]
