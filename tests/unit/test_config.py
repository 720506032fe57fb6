"""Every class of bad configuration gives one line naming the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncer.config import Settings, load_settings, parse_duration, redact_dsn
from syncer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GOOD = """
[database]
dsn = "postgresql://syncer:pw@127.0.0.1:5432/syncer"
[api]
endpoint = "https://ims.{region}.myhuaweicloud.com"
auth = "aksk"
page_size = 500
[sync]
regions = ["cn-north-4"]
image_types = ["gold", "private"]
delete_after_missed_sweeps = 2
full_interval = "1h"
delta_interval = "2m"
[feed]
listen = "127.0.0.1:8080"
token = ""
retention = "30d"
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_settings(path, env or {})


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    line = str(info.value)
    assert "\n" not in line and str(tmp_path / "config.toml") in line
    return line


def test_example_config_loads() -> None:
    s = load_settings(ROOT / "config.example.toml", {})
    assert s.sync.regions == ("cn-north-4", "ap-southeast-1")
    assert s.sync.image_types == ("gold", "private", "shared", "market")
    assert s.api.page_size == 500 and s.api.auth == "aksk"
    assert s.sync.full_interval == 3600 and s.sync.delta_interval == 120
    assert s.feed.retention == 30 * 86400 and (s.feed.host, s.feed.port) == ("127.0.0.1", 8080)
    assert (s.api.auth_holdback, s.api.auth_holdback_max) == (60, 1800)
    assert s.warnings == ()


def test_good_config_and_env_overrides(tmp_path: Path) -> None:
    env = {
        "SYNCER_DATABASE_DSN": "postgresql://other@db.internal/syncer",
        "HUAWEICLOUD_SDK_AK": "AKAK",
        "HUAWEICLOUD_SDK_SK": "SKSK",
        "HUAWEICLOUD_SDK_PROJECT_ID": "p1",
    }
    s = load(tmp_path, GOOD, env)
    assert s.database.dsn == "postgresql://other@db.internal/syncer"
    assert (s.credentials.ak, s.credentials.sk) == ("AKAK", "SKSK")
    s.require_credentials()
    assert "SKSK" not in repr(s) and "AKAK" not in repr(s)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # missing keys
        (lambda t: t.replace('regions = ["cn-north-4"]', ""), "sync.regions is required"),
        (
            lambda t: t.replace('dsn = "postgresql://syncer:pw@127.0.0.1:5432/syncer"', ""),
            "database.dsn is required (or set SYNCER_DATABASE_DSN)",
        ),
        # wrong types
        (
            lambda t: t.replace("page_size = 500", 'page_size = "500"'),
            "api.page_size must be an integer, got a string",
        ),
        (
            lambda t: t.replace('regions = ["cn-north-4"]', 'regions = "cn-north-4"'),
            "sync.regions must be a list, got a string",
        ),
        (
            lambda t: t.replace(
                "delete_after_missed_sweeps = 2", "delete_after_missed_sweeps = true"
            ),
            "sync.delete_after_missed_sweeps must be an integer, got a boolean",
        ),
        (
            lambda t: "feed = 3\n" + t.replace("[feed]", "[feedx]"),
            "feed must be a table, got an integer",
        ),
        (
            lambda t: t.replace('token = ""', 'token = ""\nallow_insecure = "yes"'),
            "feed.allow_insecure must be a boolean (true or false), got a string",
        ),
        (
            lambda t: t.replace('token = ""', 'token = ""\nallow_insecure = 1'),
            "feed.allow_insecure must be a boolean (true or false), got an integer",
        ),
        (
            lambda t: t.replace('token = ""', 'token = ""\npool_size = true'),
            "feed.pool_size must be an integer, got a boolean",
        ),
        # out of range and bad values
        (
            lambda t: t.replace('token = ""', 'token = ""\nmax_streams = 0'),
            "feed.max_streams must be between 1 and 100000, got 0",
        ),
        (
            lambda t: t.replace("page_size = 500", "page_size = 0"),
            "api.page_size must be between 1 and 1000, got 0",
        ),
        (
            lambda t: t.replace('auth = "aksk"', 'auth = "password"'),
            "api.auth must be one of aksk, token, none, got 'password'",
        ),
        (
            lambda t: t.replace('"gold", "private"', '"gold", "public"'),
            "sync.image_types has unknown type 'public'",
        ),
        (
            lambda t: t.replace('"gold", "private"', '"gold", "gold"'),
            "sync.image_types lists a value twice",
        ),
        (
            lambda t: t.replace('full_interval = "1h"', 'full_interval = "hourly"'),
            "sync.full_interval not a duration: 'hourly'",
        ),
        (
            lambda t: t.replace('listen = "127.0.0.1:8080"', 'listen = "8080"'),
            "feed.listen must be HOST:PORT, got '8080'",
        ),
        (
            lambda t: t.replace("https://ims.{region}", "ims.{region}"),
            "api.endpoint must be an http(s) URL",
        ),
        # found by tests/unit/test_config_fuzz.py: these raised ValueError, not one line
        (
            lambda t: t.replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:80²"'),
            "feed.listen must be HOST:PORT, got '127.0.0.1:80²'",
        ),
        (
            lambda t: t.replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:٨٠"'),
            "feed.listen must be HOST:PORT",  # Arabic-Indic digits: int() takes them, we do not
        ),
        (
            lambda t: t.replace("https://ims.{region}", "http://[::1"),
            "api.endpoint must be an http(s) URL, got 'http://[::1.myhuaweicloud.com'",
        ),
        # bad DSNs
        (
            lambda t: t.replace("postgresql://syncer:pw@127.0.0.1:5432/syncer", "mysql://x@h/db"),
            "bad database DSN 'mysql://x@h/db': must start with postgresql://",
        ),
        (lambda t: t.replace("127.0.0.1:5432", "127.0.0.1:99999"), "bad database DSN"),
        # not TOML at all
        (lambda t: t + "\n[[[", "not valid TOML"),
    ],
)
def test_bad_config_one_line(tmp_path: Path, change: object, expected: str) -> None:
    assert callable(change)
    assert expected in error_of(tmp_path, change(GOOD))


def test_feed_keys(tmp_path: Path) -> None:
    s = load(tmp_path, GOOD)
    assert (s.feed.allow_insecure, s.feed.pool_size, s.feed.max_streams) == (False, 4, 2000)
    s = load(
        tmp_path,
        GOOD.replace('token = ""', 'token = ""\nallow_insecure = true\npool_size = 2'),
        {"SYNCER_FEED_TOKEN": "t0ken"},
    )
    assert (s.feed.allow_insecure, s.feed.pool_size, s.feed.token) == (True, 2, "t0ken")
    assert "t0ken" not in repr(s)


def test_bad_dsn_never_shows_password(tmp_path: Path) -> None:
    line = error_of(tmp_path, GOOD.replace("127.0.0.1:5432", "127.0.0.1:99999"))
    assert ":pw@" not in line and "***" in line


def test_unknown_key_warns(tmp_path: Path) -> None:
    s = load(tmp_path, GOOD.replace("[sync]", "[sync]\nregoins = []") + "\n[extra]\nx = 1\n")
    assert any("unknown key sync.regoins" in w for w in s.warnings)
    assert any("unknown section [extra]" in w for w in s.warnings)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml", {})


def test_missing_credentials(tmp_path: Path) -> None:
    s = load(tmp_path, GOOD, {"HUAWEICLOUD_SDK_AK": "a"})
    with pytest.raises(ConfigError, match="HUAWEICLOUD_SDK_SK not set"):
        s.require_credentials()
    s = load(tmp_path, GOOD, {"HUAWEICLOUD_SDK_AK": "a", "HUAWEICLOUD_SDK_SK": "b"})
    with pytest.raises(ConfigError, match="no project id for region cn-north-4"):
        s.require_credentials()
    s = load(tmp_path, GOOD.replace('auth = "aksk"', 'auth = "none"'), {})
    s.require_credentials()


def test_durations_and_redaction() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        parse_duration("5 minutes")
    assert redact_dsn("postgresql://u:secret@h:5/d") == "postgresql://u:***@h:5/d"


def test_ca_file_is_checked_at_load(tmp_path: Path) -> None:
    def with_ca(path: object) -> str:
        return GOOD.replace("page_size = 500", f'page_size = 500\nca_file = "{path}"')

    missing = error_of(tmp_path, with_ca("ca/absent.pem"))
    # relative to the configuration file's folder
    assert f"api.ca_file '{tmp_path / 'ca/absent.pem'}': no such file" in missing
    assert "a directory" in error_of(tmp_path, with_ca(tmp_path))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    assert "holds no usable PEM certificate" in error_of(tmp_path, with_ca("junk.pem"))
    assert "is empty" in error_of(tmp_path, with_ca(" "))
    assert load(tmp_path, GOOD).api.ca_file is None


@pytest.mark.parametrize("key", ["verify", "verify_ssl", "tls_verify", "insecure", "ssl"])
def test_no_switch_turns_tls_verification_off(tmp_path: Path, key: str) -> None:
    line = error_of(tmp_path, GOOD.replace("page_size = 500", f"page_size = 500\n{key} = false"))
    assert f"api.{key} is not supported: TLS verification cannot be turned off" in line
    assert "api.ca_file" in line


@pytest.mark.parametrize(
    ("auth", "key", "url", "refused"),
    [
        ("aksk", "endpoint", "http://ims.{region}.example.com", True),
        ("token", "endpoint", "http://10.0.0.7:8080/{region}", True),
        ("token", "iam_endpoint", "http://iam.{region}.example.com", True),
        ("aksk", "iam_endpoint", "http://iam.{region}.example.com", False),  # not used
        ("none", "endpoint", "http://ims.{region}.example.com", False),  # nothing secret sent
        ("aksk", "endpoint", "http://127.0.0.1:8787/{region}", False),  # the simulator
        ("token", "endpoint", "http://localhost:8787/{region}", False),
        ("aksk", "endpoint", "http://[::1]:8787/{region}", False),
    ],
)
def test_credentials_never_go_over_plain_http_off_the_machine(
    tmp_path: Path, auth: str, key: str, url: str, refused: bool
) -> None:
    text = GOOD.replace('auth = "aksk"', f'auth = "{auth}"\n{key} = "{url}"')
    if key == "endpoint":
        text = text.replace('endpoint = "https://ims.{region}.myhuaweicloud.com"\n', "")
    if refused:
        line = error_of(tmp_path, text)
        assert f"api.{key} is plain http" in line and "unencrypted" in line
    else:
        assert getattr(load(tmp_path, text).api, key) == url


def test_answer_cap_key(tmp_path: Path) -> None:
    assert load(tmp_path, GOOD).api.max_answer_bytes == 32 * 1024 * 1024
    s = load(
        tmp_path, GOOD.replace("page_size = 500", "page_size = 500\nmax_answer_bytes = 4194304")
    )
    assert s.api.max_answer_bytes == 4 * 1024 * 1024
    line = error_of(
        tmp_path, GOOD.replace("page_size = 500", "page_size = 500\nmax_answer_bytes = 10")
    )
    assert "api.max_answer_bytes must be between 1048576 and 1073741824, got 10" in line


@pytest.mark.parametrize(
    ("dsn", "redacted", "secrets"),
    [
        ("postgresql://u:p%40ss@h:5/d", "postgresql://u:***@h:5/d", {"p%40ss", "p@ss"}),
        (
            "postgresql://u@h/d?sslmode=require&password=s%23cret",
            "postgresql://u@h/d?sslmode=require&password=***",
            {"s%23cret", "s#cret"},
        ),
        (
            "postgresql://u:pw1@h/d?Password=pw2",
            "postgresql://u:***@h/d?Password=***",
            {"pw1", "pw2"},
        ),
        ("host=db user=u password=secret dbname=d", "host=db user=u password=*** dbname=d", set()),
        ("host=db password='se cret' dbname=d", "host=db password=*** dbname=d", set()),
        ("postgresql://u@h/d?sslmode=require", "postgresql://u@h/d?sslmode=require", set()),
    ],
)
def test_every_dsn_password_is_redacted_and_registered(
    tmp_path: Path, dsn: str, redacted: str, secrets: set[str]
) -> None:
    assert redact_dsn(dsn) == redacted
    if dsn.startswith("postgresql://"):
        s = load(tmp_path, GOOD.replace("postgresql://syncer:pw@127.0.0.1:5432/syncer", dsn))
        assert set(s.secrets()) == secrets
        assert not any(secret in repr(s) for secret in secrets)
    else:  # refused, without the password
        line = error_of(tmp_path, GOOD.replace("postgresql://syncer:pw@127.0.0.1:5432/syncer", dsn))
        assert "must start with postgresql://" in line and "secret" not in line
