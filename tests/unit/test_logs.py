"""Log lines: JSON off a terminal, readable on one, and never a secret — whatever logs it."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from syncer import logs
from syncer.config import settings_from_mapping

AK = "AKLOGS1234567890ABCD"
SK = 'SKLOGS-0987654321-abcdef"with\\quote'
TOKEN = "TOKLOGS-static-token-value"
PASSWORD = "PWLOGS-hunter2"
DSN_PASSWORD = "DBPWLOGS-s3cret"
FEED_TOKEN = "FEEDLOGS-bearer-value"
IAM_TOKEN = "MIIsim" + "x" * 60
UNREGISTERED_DSN_PASSWORD = "OTHERDB-pw-never-registered"
SECRETS = (AK, SK, TOKEN, PASSWORD, DSN_PASSWORD, FEED_TOKEN, IAM_TOKEN, UNREGISTERED_DSN_PASSWORD)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def register() -> None:
    settings = settings_from_mapping(
        {
            "database": {"dsn": f"postgresql://syncer:{DSN_PASSWORD}@db.internal:5432/syncer"},
            "sync": {"regions": ["cn-north-4"]},
            "feed": {"token": FEED_TOKEN},
        },
        {
            "HUAWEICLOUD_SDK_AK": AK,
            "HUAWEICLOUD_SDK_SK": SK,
            "HUAWEICLOUD_SDK_TOKEN": TOKEN,
            "HUAWEICLOUD_SDK_PASSWORD": PASSWORD,
        },
    )
    assert set(settings.secrets()) == {AK, SK, TOKEN, PASSWORD, DSN_PASSWORD, FEED_TOKEN}
    logs.redact_secrets(settings.secrets())


def log_every_secret() -> None:
    log = logging.getLogger("syncer.test")
    log.warning("AK %s and SK %s", AK, SK)
    log.warning(
        "request failed",
        extra={
            "headers": {"Authorization": f"SDK-HMAC-SHA256 Access={AK}, Signature=" + "ab" * 32},
            "token": TOKEN,
            "password": PASSWORD,
        },
    )
    log.error("connecting to postgresql://syncer:%s@db.internal/syncer failed", DSN_PASSWORD)
    log.error("and to postgresql://other:%s@elsewhere/db too", UNREGISTERED_DSN_PASSWORD)
    log.error("host=db user=syncer password=%s dbname=syncer", UNREGISTERED_DSN_PASSWORD)
    log.info("IAM answered", extra={"X-Subject-Token": IAM_TOKEN})
    logging.getLogger("aiohttp.client").warning(
        "echoed: X-Auth-Token: %s, Authorization: Bearer %s", TOKEN, FEED_TOKEN
    )
    try:
        raise RuntimeError(f"the gateway said {SK} and {PASSWORD}\nwith a second line")
    except RuntimeError:
        log.exception("it broke")


@pytest.mark.parametrize("json", [True, False])
def test_no_secret_reaches_a_log_line(restore_logging: None, json: bool) -> None:
    register()
    stream = io.StringIO()
    logs.configure(logging.DEBUG, json=json, stream=stream)
    log_every_secret()
    text = stream.getvalue()
    lines = text.splitlines()
    assert len(lines) == 8  # one line per record, the exception's included
    for secret in SECRETS:
        assert secret not in text, secret
        assert orjson.dumps(secret).decode()[1:-1] not in text, secret
    assert text.count(logs.MASK) >= len(SECRETS)
    assert "db.internal" in text and "the gateway said" in text  # the rest stays readable
    if json:
        docs = [orjson.loads(line) for line in lines]  # redaction kept every line valid JSON
        assert docs[-1]["error"].startswith("RuntimeError: the gateway said ***")
        assert docs[1]["password"] == logs.MASK and docs[1]["token"] == logs.MASK


def test_json_off_a_terminal_lines_on_one(restore_logging: None) -> None:
    pipe, tty = io.StringIO(), Tty()
    logs.configure(logging.INFO, stream=pipe)
    logging.getLogger("syncer.test").info(
        "pass ok", extra={"partition": "cn-north-4/gold", "pages": 3, "seconds": 1.5}
    )
    doc = orjson.loads(pipe.getvalue())
    assert (doc["level"], doc["msg"], doc["partition"], doc["pages"]) == (
        "info",
        "pass ok",
        "cn-north-4/gold",
        3,
    )
    logs.configure(logging.INFO, stream=tty)
    logging.getLogger("syncer.test").info(
        "pass ok", extra={"partition": "cn-north-4/gold", "pages": 3}
    )
    line = tty.getvalue().strip()
    assert "INFO    pass ok  partition=cn-north-4/gold pages=3" in line
