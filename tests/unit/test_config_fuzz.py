"""Fuzzing configuration files (hypothesis): random TOML documents, random values for every
known key inside an otherwise good file, random environments, random text and bytes. Loading
either succeeds or raises ConfigError with one line naming the file; never another exception.
Examples: ``SYNCER_FUZZ_EXAMPLES``."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncer.config import _SCHEMA, Settings, load_settings
from syncer.errors import ConfigError
from tests.budget import FUZZ, FUZZ_EXAMPLES

KNOWN = [(section, key) for section, keys in _SCHEMA.items() for key in keys]
ENV_NAMES = [
    "SYNCER_DATABASE_DSN",
    "SYNCER_FEED_LISTEN",
    "SYNCER_FEED_TOKEN",
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_PROJECT_ID",
    "HUAWEICLOUD_SDK_TOKEN",
    "HUAWEICLOUD_SDK_DOMAIN_NAME",
    "HUAWEICLOUD_SDK_USERNAME",
    "HUAWEICLOUD_SDK_PASSWORD",
]
# every key gets a share of the budget
PER_KEY = settings(FUZZ, max_examples=max(3, FUZZ_EXAMPLES // 10))
GOOD: dict[str, dict[str, Any]] = {
    "database": {"dsn": "postgresql://syncer@127.0.0.1:5432/syncer"},
    "api": {"auth": "none"},
    "sync": {"regions": ["cn-north-4"]},
}


# ---- a small TOML writer (tomllib only reads) ----------------------------------------------


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_key(k: str) -> str:
    bare = k and all(c.isascii() and (c.isalnum() or c in "-_") for c in k)
    return k if bare else json.dumps(k, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_document(doc: dict[str, Any]) -> str:
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for section, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_key(section)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# ---- values ---------------------------------------------------------------------------------


def near_values() -> st.SearchStrategy[Any]:
    """Values close to what a key takes: durations, URLs, DSNs, listen addresses, regions…"""
    return st.sampled_from(
        [
            "30s", "1h30m", "0s", "-5m", "1e3s", "9" * 400 + "d", "5 m", "1.5.5s", "٣s", "s", "",
            "https://ims.{region}.example.com", "http://[::1", "http://[", "https://", "ftp://x",
            "http://h:99999", "postgresql://u:p@h:5432/d", "postgresql://u@[::1]:5/d",
            "postgresql://u@h:port/d", "postgresql:///d?host=/tmp", "postgres://", "mysql://u@h/d",
            "127.0.0.1:8080", "127.0.0.1:²", "127.0.0.1:٣", ":80", "[::1]:8080", "h:-1", "h:65536",
            "cn-north-4", "CN", "-a", "a" * 64, "none", "aksk", "token", "gold", "market",
            ["cn-north-4"], ["cn-north-4", "cn-north-4"], [], ["gold", "x"], [1, 2], [["a"]],
            {"cn-north-4": "p"}, {"cn-north-4": ""}, {"r": 5},
            0, 1, -1, 2**63 - 1, -(2**63), 1000, 1001, 0.0, 0.5, 1.5, -0.0,
            math.nan, math.inf, -math.inf, True, False,
        ]
    )  # fmt: skip


# A good value of each string-valued key, to be damaged (most bugs hide one edit away from it).
GOOD_TEXT = {
    "dsn": "postgresql://syncer:pw@127.0.0.1:5432/syncer",
    "endpoint": "https://ims.{region}.myhuaweicloud.com",
    "iam_endpoint": "https://iam.{region}.myhuaweicloud.com",
    "auth": "aksk",
    "listen": "127.0.0.1:8080",
    "token": "s3cret",
    "retention": "30d",
    "full_interval": "1h30m",
    "lock_timeout": "10s",
}
# characters that mean something to the parsers involved (URLs, ints, durations, TOML)
TRICKY = "²①٣৪0-9.:@/[]%{}# \t\x00\u202e\ufeffé中"


def damaged(good: str) -> st.SearchStrategy[str]:
    """``good`` with a few characters inserted, replaced or cut."""
    edits = st.lists(
        st.tuples(
            st.sampled_from(["insert", "replace", "cut"]),
            st.integers(0, len(good)),
            st.text(
                st.one_of(*[st.sampled_from(TRICKY)] * 3, st.characters(exclude_categories=["Cs"])),
                min_size=1,
                max_size=3,
            ),
        ),
        min_size=1,
        max_size=3,
    )

    def apply(ops: list[tuple[str, int, str]]) -> str:
        text = good
        for op, at, chars in ops:
            at = min(at, len(text))
            if op == "insert":
                text = text[:at] + chars + text[at:]
            elif op == "replace":
                text = text[:at] + chars + text[at + len(chars) :]
            else:
                text = text[:at] + text[at + len(chars) :]
        return text

    return edits.map(apply)


def value_for(key: str) -> st.SearchStrategy[Any]:
    """Any value for ``key``: one close to its good value, or anything at all."""
    near = damaged(GOOD_TEXT[key]) if key in GOOD_TEXT else damaged("30s")
    return st.one_of(near, near_values(), any_value())


def any_value() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
        st.datetimes(timezones=st.just(UTC)),
        near_values(),
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=6,
    )


def environments() -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(
        st.sampled_from(ENV_NAMES),
        st.one_of(
            near_values().filter(lambda v: isinstance(v, str)),
            damaged(GOOD_TEXT["dsn"]),
            damaged(GOOD_TEXT["listen"]),
            st.text(st.characters(exclude_categories=["Cs"]), max_size=20),
        ),
        max_size=4,
    )


def check(tmp_path: Path, content: str | bytes, env: dict[str, str]) -> None:
    path = tmp_path / "config.toml"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    try:
        settings = load_settings(path, env)
    except ConfigError as e:
        line = str(e)
        assert line and "\n" not in line and "\r" not in line, line
        assert line.startswith(str(path)) or line.startswith("<"), line
        return
    assert isinstance(settings, Settings)


@pytest.mark.parametrize(("section", "key"), KNOWN, ids=[f"{s}.{k}" for s, k in KNOWN])
@PER_KEY
@given(data=st.data(), env=environments())
def test_fuzz_every_known_key_with_any_value(
    tmp_path: Path, section: str, key: str, data: st.DataObject, env: dict[str, str]
) -> None:
    """Each key in turn, in an otherwise good file (so that its own check is reached), with
    values near its good one and anything else; sometimes a second key is off too."""
    doc = {s: dict(keys) for s, keys in GOOD.items()}
    doc.setdefault(section, {})[key] = data.draw(value_for(key), label=f"{section}.{key}")
    if data.draw(st.integers(0, 3), label="another") == 0:
        other_section, other = data.draw(st.sampled_from(KNOWN), label="other key")
        doc.setdefault(other_section, {})[other] = data.draw(value_for(other), label="other")
    check(tmp_path, toml_document(doc), env)


@FUZZ
@given(
    doc=st.dictionaries(
        st.one_of(st.sampled_from(list(_SCHEMA)), st.text(max_size=8)),
        st.one_of(
            st.dictionaries(
                st.one_of(st.sampled_from([k for _, k in KNOWN]), st.text(max_size=8)),
                any_value(),
                max_size=5,
            ),
            any_value(),
        ),
        max_size=5,
    ),
    env=environments(),
)
def test_fuzz_random_toml_documents(
    tmp_path: Path, doc: dict[str, Any], env: dict[str, str]
) -> None:
    check(tmp_path, toml_document(doc), env)


@FUZZ
@given(content=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_fuzz_random_text_and_bytes(tmp_path: Path, content: str | bytes) -> None:
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    check(tmp_path, content, {})
