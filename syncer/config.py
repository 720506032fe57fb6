"""One frozen, validated settings object from a TOML file plus the environment.

Every problem names the file, the key and what is wrong, in one line:
``config.toml: api.page_size must be between 1 and 1000, got 0``.
Secrets (AK/SK, passwords, tokens) come only from the environment and never appear in a repr.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from syncer.errors import ConfigError

IMAGE_TYPES = ("gold", "private", "shared", "market")
AUTH_MODES = ("aksk", "token", "none")
DEFAULT_CONFIG_PATHS = ("syncer.toml", "/etc/syncer/syncer.toml")

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only: "²".isdigit() is true, int("²") fails


def parse_duration(text: str) -> float:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"30d"`` → seconds. Raises ValueError."""
    s = text.strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f'not a duration: {text!r} (use e.g. "30s", "5m", "1h", "30d")')
    return total


@dataclass(frozen=True)
class DatabaseSettings:
    dsn: str
    pool_size: int = 10
    connect_timeout: float = 10.0
    # Bounds on every wait of a sync session, so that one stalled writer (a frozen replica
    # between INSERT and COMMIT, a lost network) cannot stall the others for long.
    lock_timeout: float = 10.0
    statement_timeout: float = 300.0
    idle_in_transaction_timeout: float = 30.0

    def __repr__(self) -> str:  # the DSN may hold a password
        return f"DatabaseSettings(dsn={redact_dsn(self.dsn)!r}, pool_size={self.pool_size})"


@dataclass(frozen=True)
class ApiSettings:
    endpoint: str = "https://ims.{region}.myhuaweicloud.com"
    auth: Literal["aksk", "token", "none"] = "aksk"
    page_size: int = 500
    request_timeout: float = 30.0
    max_attempts: int = 6
    max_concurrency: int = 16  # global cap on requests in flight
    region_concurrency: int = 4  # start (and ceiling) of the adaptive limit per endpoint
    project_ids: Mapping[str, str] = field(default_factory=dict)
    iam_endpoint: str = "https://iam.{region}.myhuaweicloud.com"
    auth_holdback: float = 60.0  # a rejected credential's first hold-back (doubles each time)
    auth_holdback_max: float = 1800.0
    # TLS is always verified; a private CA is trusted by naming its PEM file (in addition to
    # the system's store). There is no switch that turns verification off.
    ca_file: str | None = None
    # An answer larger than this (decompressed) fails its request: a real 1,000-image page is
    # 2-3 MB, so the default leaves ten times that.
    max_answer_bytes: int = 32 * 1024 * 1024

    def url_for(self, region: str) -> str:
        """The full listing URL for one region."""
        return self.endpoint.replace("{region}", region).rstrip("/") + "/v2/cloudimages"


@dataclass(frozen=True)
class SyncSettings:
    regions: tuple[str, ...] = ()
    image_types: tuple[str, ...] = IMAGE_TYPES
    delete_after_missed_sweeps: int = 2
    full_interval: float = 3600.0
    delta_interval: float = 120.0
    delta_overlap: float = 300.0
    min_sweep_ratio: float = 0.5  # a complete sweep seeing fewer live images tombstones nothing
    partition_concurrency: int = 4
    # A pass's hold on its partition, renewed while it runs: a replica that dies or loses the
    # database loses its partitions after this long (and its open runs are closed).
    lease_ttl: float = 30.0
    # How long a stopping daemon gives its running passes to finish or roll back.
    stop_timeout: float = 25.0


@dataclass(frozen=True)
class FeedSettings:
    listen: str = "127.0.0.1:8080"
    token: str = field(default="", repr=False)
    retention: float = 30 * 86400.0
    allow_insecure: bool = False  # serve /v1/ without a token on a non-loopback address
    pool_size: int = 4  # the feed's own connections (apart from the sync's, and its listener)
    max_streams: int = 2000  # SSE streams plus waiting long-polls; more are answered 503

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class Credentials:
    """From the environment names Huawei's own SDK reads. Never logged."""

    ak: str = field(default="", repr=False)
    sk: str = field(default="", repr=False)
    project_id: str = ""
    # token auth: a ready token, or IAM password login
    token: str = field(default="", repr=False)
    domain: str = ""
    username: str = ""
    password: str = field(default="", repr=False)

    def project_for(self, region: str, api: ApiSettings) -> str:
        return api.project_ids.get(region, self.project_id)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Credentials:
        return cls(
            ak=env.get("HUAWEICLOUD_SDK_AK", ""),
            sk=env.get("HUAWEICLOUD_SDK_SK", ""),
            project_id=env.get("HUAWEICLOUD_SDK_PROJECT_ID", ""),
            token=env.get("HUAWEICLOUD_SDK_TOKEN", ""),
            domain=env.get("HUAWEICLOUD_SDK_DOMAIN_NAME", ""),
            username=env.get("HUAWEICLOUD_SDK_USERNAME", ""),
            password=env.get("HUAWEICLOUD_SDK_PASSWORD", ""),
        )


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    api: ApiSettings = field(default_factory=ApiSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    feed: FeedSettings = field(default_factory=FeedSettings)
    credentials: Credentials = field(default_factory=Credentials)
    source: str = "<defaults>"
    warnings: tuple[str, ...] = ()

    def secrets(self) -> tuple[str, ...]:
        """Every secret value of this configuration, for the log redactor (syncer.logs)."""
        c = self.credentials
        values = (c.ak, c.sk, c.token, c.password, self.feed.token)
        return tuple(v for v in values if v) + dsn_passwords(self.database.dsn)

    def require_credentials(self) -> None:
        """Fail early, in one line, when the chosen auth mode lacks what it needs."""
        c, where = self.credentials, self.source
        if self.api.auth == "aksk":
            missing = [
                n for n, v in (("HUAWEICLOUD_SDK_AK", c.ak), ("HUAWEICLOUD_SDK_SK", c.sk)) if not v
            ]
            if missing:
                raise ConfigError(
                    f"{where}: api.auth is 'aksk' but {' and '.join(missing)} "
                    "not set in the environment"
                )
        if self.api.auth in ("aksk", "token"):
            lacking = [r for r in self.sync.regions if not c.project_for(r, self.api)]
            if lacking:
                raise ConfigError(
                    f"{where}: no project id for region {lacking[0]}: "
                    "set HUAWEICLOUD_SDK_PROJECT_ID or [api.project_ids]"
                )
        if self.api.auth == "token" and not (c.token or (c.username and c.password and c.domain)):
            raise ConfigError(
                f"{where}: api.auth is 'token' but neither HUAWEICLOUD_SDK_TOKEN nor "
                "HUAWEICLOUD_SDK_DOMAIN_NAME/USERNAME/PASSWORD are set in the environment"
            )


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The client's TLS context: certificates and host names verified against the system's
    store, plus ``ca_file`` (a PEM bundle) when given. Raises OSError or ssl.SSLError when
    ``ca_file`` cannot be read or holds no certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&]*")
_KEYWORD_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)")


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***``: in the URL's user part, in its query
    (``?password=``, which the driver accepts too), or in a libpq ``key=value`` string."""
    if "://" not in dsn:
        return _KEYWORD_PASSWORD.sub(r"\1***", dsn)
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable dsn>"
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return dsn
    return parts._replace(netloc=netloc, query=query).geturl()


def dsn_passwords(dsn: str) -> tuple[str, ...]:
    """Every password a DSN holds (user part or query), as written and percent-decoded."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return ()
    found = [parts.password or ""]
    found += [m.group(0).split("=", 1)[1] for m in _QUERY_PASSWORD.finditer(parts.query)]
    return tuple({form for p in found if p for form in (p, unquote(p))})


# --------------------------------------------------------------------------- loading

_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "database": {
        "dsn": str,
        "pool_size": int,
        "connect_timeout": (int, float),
        "lock_timeout": (int, float, str),
        "statement_timeout": (int, float, str),
        "idle_in_transaction_timeout": (int, float, str),
    },
    "api": {
        "endpoint": str,
        "auth": str,
        "page_size": int,
        "request_timeout": (int, float),
        "max_attempts": int,
        "max_concurrency": int,
        "region_concurrency": int,
        "project_ids": dict,
        "iam_endpoint": str,
        "auth_holdback": str,
        "auth_holdback_max": str,
        "ca_file": str,
        "max_answer_bytes": int,
    },
    "sync": {
        "regions": list,
        "image_types": list,
        "delete_after_missed_sweeps": int,
        "full_interval": str,
        "delta_interval": str,
        "delta_overlap": str,
        "min_sweep_ratio": (int, float),
        "partition_concurrency": int,
        "lease_ttl": (int, float, str),
        "stop_timeout": (int, float, str),
    },
    "feed": {
        "listen": str,
        "token": str,
        "retention": str,
        "allow_insecure": bool,
        "pool_size": int,
        "max_streams": int,
    },
}
_REQUIRED = {("sync", "regions")}
# Keys people reach for to turn TLS verification off: refused, never silently ignored.
_NO_TLS_OFF_SWITCH = frozenset(
    {"verify", "verify_ssl", "ssl_verify", "verify_tls", "tls_verify", "insecure", "ssl", "tls"}
)


class _Reader:
    def __init__(self, where: str, data: dict[str, Any]) -> None:
        self.where, self.data, self.warnings = where, data, list[str]()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key} {problem}")

    def check_shape(self) -> None:
        api = self.data.get("api")
        for key in sorted(_NO_TLS_OFF_SWITCH & set(api if isinstance(api, dict) else ())):
            raise self.fail(
                f"api.{key}",
                "is not supported: TLS verification cannot be turned off; to trust a private "
                "CA, set api.ca_file to its PEM file",
            )
        for section, value in self.data.items():
            if section not in _SCHEMA:
                self.warnings.append(f"{self.where}: unknown section [{section}] ignored")
                continue
            if not isinstance(value, dict):
                raise self.fail(section, f"must be a table, got {_kind(value)}")
            for key, v in value.items():
                expected = _SCHEMA[section].get(key)
                if expected is None:
                    self.warnings.append(f"{self.where}: unknown key {section}.{key} ignored")
                elif not _has_type(v, expected):
                    raise self.fail(
                        f"{section}.{key}", f"must be {_type_name(expected)}, got {_kind(v)}"
                    )
        for section, key in _REQUIRED:
            if key not in self.data.get(section, {}):
                raise self.fail(f"{section}.{key}", "is required")

    def get(self, section: str, key: str, default: Any) -> Any:
        return self.data.get(section, {}).get(key, default)

    def int_in(self, section: str, key: str, default: int, lo: int, hi: int) -> int:
        v = self.get(section, key, default)
        if not lo <= v <= hi:
            raise self.fail(f"{section}.{key}", f"must be between {lo} and {hi}, got {v}")
        return int(v)

    def duration(self, section: str, key: str, default: float, minimum: float = 0.0) -> float:
        """A duration: ``"30s"``, ``"5m"``… (or, where the schema allows it, plain seconds)."""
        raw = self.get(section, key, None)
        if raw is None:
            return default
        try:
            seconds = float(raw) if isinstance(raw, int | float) else parse_duration(raw)
        except ValueError as e:
            raise self.fail(f"{section}.{key}", str(e)) from None
        if seconds < minimum:
            raise self.fail(f"{section}.{key}", f"must be at least {minimum:g}s, got {raw!r}")
        return seconds

    def str_list(self, section: str, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self.get(section, key, list(default))
        if not all(isinstance(x, str) for x in v):
            raise self.fail(f"{section}.{key}", "must be a list of strings")
        if len(set(v)) != len(v):
            raise self.fail(f"{section}.{key}", "lists a value twice")
        return tuple(v)


def _has_type(v: Any, expected: type | tuple[type, ...]) -> bool:
    """isinstance, except that a boolean is only a boolean (bool subclasses int in Python)."""
    if isinstance(v, bool):
        return expected is bool
    return isinstance(v, expected)


def _kind(v: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(v), type(v).__name__)


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return "a number or a duration" if str in t else "a number"
    return {
        bool: "a boolean (true or false)",
        int: "an integer",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(t, t.__name__)


def _is_http_url(url: str) -> bool:
    try:
        return urlsplit(url).scheme in ("http", "https") and bool(
            urlsplit(url.replace("{region}", "r")).hostname
        )
    except ValueError:  # e.g. "http://[::1" (an IPv6 host without its bracket)
        return False


def validate_dsn(dsn: str, where: str) -> str:
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ConfigError(f"{where}: bad database DSN {redact_dsn(dsn)!r}: {e}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            f"{where}: bad database DSN {redact_dsn(dsn)!r}: must start with postgresql://"
        )
    if not (parts.hostname or "host=" in parts.query):
        raise ConfigError(f"{where}: bad database DSN {redact_dsn(dsn)!r}: no host")
    return dsn


def _check_url(r: _Reader, key: str, url: str, *, credentials: bool) -> None:
    """An http(s) URL; plain http only to a loopback host when credentials travel over it."""
    if not isinstance(url, str) or not _is_http_url(url):
        raise r.fail(f"api.{key}", f"must be an http(s) URL, got {url!r}")
    parts = urlsplit(url.replace("{region}", "r"))
    host = parts.hostname or ""
    if credentials and parts.scheme == "http" and not is_loopback_host(host):
        raise r.fail(
            f"api.{key}",
            f"is plain http to {host}, which would send credentials unencrypted: "
            "use https (api.ca_file trusts a private CA), or a loopback address",
        )


def _ca_file(r: _Reader, base: Path | None) -> str | None:
    raw = r.get("api", "ca_file", None)
    if raw is None:
        return None
    if not raw.strip():
        raise r.fail("api.ca_file", "is empty (remove it to use the system's CA store)")
    path = Path(raw).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        tls_context(str(path))
    except FileNotFoundError:
        raise r.fail("api.ca_file", f"{str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise r.fail("api.ca_file", f"{str(path)!r} is a directory, not a PEM file") from None
    except ssl.SSLError as e:  # (an OSError too)
        reason = e.reason or str(e)
        raise r.fail(
            "api.ca_file", f"{str(path)!r} holds no usable PEM certificate ({reason})"
        ) from None
    except OSError as e:
        raise r.fail("api.ca_file", f"{str(path)!r}: cannot read: {e.strerror or e}") from None
    return str(path)


def load_settings(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read, validate and freeze the configuration. Raises ConfigError with one line."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get("SYNCER_CONFIG") or next(
            (p for p in DEFAULT_CONFIG_PATHS if Path(p).exists()), None
        )
    if path is None:
        raise ConfigError("no configuration: pass --config PATH or set SYNCER_CONFIG")
    p = Path(path)
    where = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML: {e}") from None
    return settings_from_mapping(data, env, where, base=p.absolute().parent)


def settings_from_mapping(
    data: dict[str, Any],
    env: Mapping[str, str],
    where: str = "<config>",
    *,
    base: Path | None = None,
) -> Settings:
    """``base``: the folder relative paths (``api.ca_file``) are taken from (the config
    file's; else the working directory)."""
    r = _Reader(where, data)
    r.check_shape()

    dsn = env.get("SYNCER_DATABASE_DSN") or r.get("database", "dsn", None)
    if not dsn:
        raise r.fail("database.dsn", "is required (or set SYNCER_DATABASE_DSN)")
    database = DatabaseSettings(
        dsn=validate_dsn(dsn, where),
        pool_size=r.int_in("database", "pool_size", 10, 2, 200),
        connect_timeout=float(r.get("database", "connect_timeout", 10.0)),
        lock_timeout=r.duration("database", "lock_timeout", 10.0, minimum=0.1),
        statement_timeout=r.duration("database", "statement_timeout", 300.0, minimum=1.0),
        idle_in_transaction_timeout=r.duration(
            "database", "idle_in_transaction_timeout", 30.0, minimum=1.0
        ),
    )

    auth = r.get("api", "auth", "aksk")
    if auth not in AUTH_MODES:
        raise r.fail("api.auth", f"must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
    endpoint = r.get("api", "endpoint", ApiSettings.endpoint)
    _check_url(r, "endpoint", endpoint, credentials=auth != "none")
    iam_endpoint = r.get("api", "iam_endpoint", ApiSettings.iam_endpoint)
    _check_url(r, "iam_endpoint", iam_endpoint, credentials=auth == "token")
    project_ids = r.get("api", "project_ids", {})
    for region, pid in project_ids.items():
        if not isinstance(pid, str) or not pid:
            raise r.fail(f"api.project_ids.{region}", "must be a non-empty string")
    api = ApiSettings(
        endpoint=endpoint,
        auth=auth,
        page_size=r.int_in("api", "page_size", 500, 1, 1000),
        request_timeout=float(r.get("api", "request_timeout", 30.0)),
        max_attempts=r.int_in("api", "max_attempts", 6, 1, 50),
        max_concurrency=r.int_in("api", "max_concurrency", 16, 1, 1000),
        region_concurrency=r.int_in("api", "region_concurrency", 4, 1, 1000),
        project_ids=dict(project_ids),
        iam_endpoint=iam_endpoint,
        auth_holdback=r.duration("api", "auth_holdback", 60.0),
        auth_holdback_max=r.duration("api", "auth_holdback_max", 1800.0),
        ca_file=_ca_file(r, base),
        max_answer_bytes=r.int_in(
            "api", "max_answer_bytes", ApiSettings.max_answer_bytes, 1 << 20, 1 << 30
        ),
    )
    if api.request_timeout <= 0:
        raise r.fail("api.request_timeout", f"must be positive, got {api.request_timeout}")

    regions = r.str_list("sync", "regions", ())
    if not regions:
        raise r.fail("sync.regions", "must list at least one region")
    for region in regions:
        if not _REGION.match(region):
            raise r.fail("sync.regions", f"has an invalid region name {region!r}")
    image_types = r.str_list("sync", "image_types", IMAGE_TYPES)
    if not image_types:
        raise r.fail("sync.image_types", "must list at least one image type")
    for t in image_types:
        if t not in IMAGE_TYPES:
            raise r.fail(
                "sync.image_types", f"has unknown type {t!r} (known: {', '.join(IMAGE_TYPES)})"
            )
    ratio = float(r.get("sync", "min_sweep_ratio", 0.5))
    if not 0.0 <= ratio <= 1.0:
        raise r.fail("sync.min_sweep_ratio", f"must be between 0 and 1, got {ratio}")
    sync = SyncSettings(
        regions=regions,
        image_types=image_types,
        delete_after_missed_sweeps=r.int_in("sync", "delete_after_missed_sweeps", 2, 1, 1000),
        full_interval=r.duration("sync", "full_interval", 3600.0, minimum=1.0),
        delta_interval=r.duration("sync", "delta_interval", 120.0, minimum=1.0),
        delta_overlap=r.duration("sync", "delta_overlap", 300.0),
        min_sweep_ratio=ratio,
        partition_concurrency=r.int_in("sync", "partition_concurrency", 4, 1, 256),
        lease_ttl=r.duration("sync", "lease_ttl", 30.0, minimum=1.0),
        stop_timeout=r.duration("sync", "stop_timeout", 25.0, minimum=1.0),
    )
    if sync.stop_timeout > 300:
        raise r.fail("sync.stop_timeout", f"must be at most 5m, got {sync.stop_timeout:g}s")

    listen = env.get("SYNCER_FEED_LISTEN") or r.get("feed", "listen", "127.0.0.1:8080")
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not _PORT.fullmatch(port) or not 0 <= int(port) <= 65535:
        raise r.fail("feed.listen", f"must be HOST:PORT, got {listen!r}")
    feed = FeedSettings(
        listen=listen,
        token=env.get("SYNCER_FEED_TOKEN") or r.get("feed", "token", ""),
        retention=r.duration("feed", "retention", 30 * 86400.0, minimum=60.0),
        allow_insecure=bool(r.get("feed", "allow_insecure", False)),
        pool_size=r.int_in("feed", "pool_size", 4, 1, 100),
        max_streams=r.int_in("feed", "max_streams", 2000, 1, 100_000),
    )
    return Settings(
        database=database,
        api=api,
        sync=sync,
        feed=feed,
        credentials=Credentials.from_env(env),
        source=where,
        warnings=tuple(r.warnings),
    )
