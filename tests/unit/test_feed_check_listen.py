"""Without a token the feed is served only on loopback, unless allow_insecure says otherwise."""

from __future__ import annotations

import pytest

from syncer.config import Settings, settings_from_mapping
from syncer.errors import ConfigError
from syncer.feed import check_listen
from syncer.feed.tail import base_url


def settings(listen: str, token: str = "", allow_insecure: bool | None = None) -> Settings:
    feed: dict[str, object] = {"listen": listen, "token": token}
    if allow_insecure is not None:
        feed["allow_insecure"] = allow_insecure
    return settings_from_mapping(
        {"database": {"dsn": "postgresql://u@h/d"}, "sync": {"regions": ["r"]}, "feed": feed},
        {},
        "syncer.toml",
    )


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.9.9.9:1"]
)
def test_loopback_needs_no_token(listen: str) -> None:
    check_listen(settings(listen))


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:8080", "feed.internal:80"]
)
def test_elsewhere_needs_a_token_or_allow_insecure(listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_listen(settings(listen))
    line = str(info.value)
    assert line.startswith("syncer.toml: feed.listen") and "allow_insecure" in line
    assert "\n" not in line
    check_listen(settings(listen, token="t"))
    check_listen(settings(listen, allow_insecure=True))
    with pytest.raises(ConfigError):
        check_listen(settings(listen, allow_insecure=False))


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("0.0.0.0:9000", "http://127.0.0.1:9000"),
        ("[::]:9000", "http://127.0.0.1:9000"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("feed.internal:80", "http://feed.internal:80"),
    ],
)
def test_tail_url_from_listen(listen: str, url: str) -> None:
    assert base_url(listen) == url
