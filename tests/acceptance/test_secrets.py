"""No secret ever leaves the process: not in logs, errors, HTTP answers, metrics, `syncer status`
or the database.

Known, distinctive secrets — AK, SK, a static token, an IAM password and the tokens IAM issues,
the feed token, the DSN password (in the URL's user part and in its query), and wrong ones (a
mistyped secret is a secret too) — go through every path that could show one: `syncer migrate`;
`sync --once` with AK/SK, a wrong SK (401), a wrong IAM password, a wrong database password,
and against a gateway and an IAM that echo back everything they are sent (headers, body, in
their message and their request id); `status` (text and JSON); three daemons (`syncer run`: a
wrong SK against the echoing gateway, token auth through the simulator's IAM, a wrong database
password) whose database goes away and comes back. Every output, log file, HTTP answer (every
route, with and without the feed token, and what the status page links to; requests the
server's parser refuses go to its log), every row of every table the app writes and the
server's own log are searched for each secret, its obvious encodings and any 12-character piece
of it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import aiohttp
import asyncpg
import orjson

from syncer.simulator import Catalog, Simulator
from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate
from tests.daemon_env import free_port, until
from tests.scripted_ims import Answer, ScriptedIms, Seen

# Distinct enough that no 12-character piece of one is a piece of another.
AK = "AKCANARYa1b2c3d4e5f6"
SK = 'skCANARY/g7h8+i9"j0\\k1l2'
STATIC_TOKEN = "tokCANARYm3n4o5p6q7r8"
IAM_PASSWORD = "pwCANARYs9t0u1!v2"
FEED_TOKEN = "feedCANARYw3x4y5z6"
DB_PASSWORD = "dbCANARY@a7/b8#c9d0"
WRONG_SK = "wskCANARYe1f2g3h4"
WRONG_DB_PASSWORD = "wdbCANARYi5j6k7l8"
WRONG_IAM_PASSWORD = "wpwCANARYm9n0o1p2"
WRONG_FEED_TOKEN = "wfeedCANARYq3r4s5"
PROJECT = "0123456789abcdef0123456789abcdef"
SECRETS = {
    "AK": AK,
    "SK": SK,
    "static token": STATIC_TOKEN,
    "IAM password": IAM_PASSWORD,
    "feed token": FEED_TOKEN,
    "DSN password": DB_PASSWORD,
    "wrong SK": WRONG_SK,
    "wrong DSN password": WRONG_DB_PASSWORD,
    "wrong IAM password": WRONG_IAM_PASSWORD,
    "wrong feed token": WRONG_FEED_TOKEN,
}
AKSK_REGION, WRONG_SK_REGION, DAEMON_REGION = "cn-north-4", "cn-east-3", "cn-south-1"
IAM_REGION, WRONG_IAM_REGION = "ap-southeast-1", "eu-west-0"
APP = "syncer_app"
WINDOW = 12  # a piece of a secret this long is a leak too (a message cut in the middle of one)


def forms(secret: str) -> set[str]:
    """The secret and its obvious encodings, and every piece of WINDOW characters of it."""
    found = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        orjson.dumps(secret).decode()[1:-1],
        base64.b64encode(secret.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
    }
    found |= {secret[i : i + WINDOW] for i in range(len(secret) - WINDOW + 1)}
    return found


@dataclass
class Captured:
    """Everything the system said, by where it was said."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        n = 1
        key = where
        while key in self.texts:
            n += 1
            key = f"{where} #{n}"
        self.texts[key] = text

    def leaks(self, secrets: dict[str, str]) -> list[str]:
        found = []
        needles = [(label, form) for label, s in secrets.items() for form in forms(s)]
        needles.append(("base64 of ak:sk", base64.b64encode(f"{AK}:{SK}".encode()).decode()))
        for where, text in self.texts.items():
            squeezed = "".join(text.split())  # a secret wrapped over two lines
            seen = set()
            for label, needle in needles:
                for haystack in (text, squeezed):
                    at = haystack.find(needle)
                    if at >= 0 and label not in seen:
                        seen.add(label)
                        context = haystack[max(0, at - 80) : at + len(needle) + 40]
                        found.append(f"{label} in {where}: …{context}…")
        return found


@contextlib.contextmanager
def postgres_with_passwords(data: Path) -> Iterator[EmbeddedPostgres]:
    """A private server whose app login needs its password (the shared test server trusts
    everyone, so a wrong password would go unnoticed)."""
    pg = EmbeddedPostgres(data, durable=False).start()
    try:
        hba = pg.data / "pg_hba.conf"
        hba.write_text(
            f"host all {APP} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n" + hba.read_text()
        )
        yield pg
    finally:
        pg.stop()


def app_dsn(pg: EmbeddedPostgres, password: str, *, in_query: bool = False) -> str:
    secret = quote(password, safe="")
    if in_query:
        return f"postgresql://{APP}@127.0.0.1:{pg.port}/{APP}?password={secret}"
    return f"postgresql://{APP}:{secret}@127.0.0.1:{pg.port}/{APP}"


async def prepare_database(pg: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(pg.dsn)
    try:
        escaped = DB_PASSWORD.replace("'", "''")
        await conn.execute(f"CREATE ROLE {APP} LOGIN PASSWORD '{escaped}'")
        await conn.execute("CREATE ROLE ims_reader NOLOGIN")
        await conn.execute(f"CREATE DATABASE {APP} OWNER {APP}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def app_database(pg: EmbeddedPostgres) -> str:
    """The app's database, as the server's superuser (trusted)."""
    return pg.dsn.rsplit("/", 1)[0] + f"/{APP}"


def config(path: Path, *, dsn: str, endpoint: str, region: str, auth: str, port: int) -> Path:
    iam = f'iam_endpoint = "{endpoint}"\n' if auth == "token" else ""
    path.write_text(
        f"""
[database]
dsn = "{dsn}"
connect_timeout = 3
[api]
endpoint = "{endpoint}"
{iam}auth = "{auth}"
page_size = 10
max_attempts = 2
request_timeout = 5
auth_holdback = "2s"
[sync]
regions = ["{region}"]
full_interval = "1m"  # the daemons sweep once at start, then idle: enough here
delta_interval = "30s"
delta_overlap = "1s"
lease_ttl = "3s"
stop_timeout = "5s"
[feed]
listen = "127.0.0.1:{port}"
"""
    )
    return path


def environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "HUAWEICLOUD_"))}
    env["COLUMNS"] = "1000"  # no table cell wrapped over two lines
    env.update(values)
    return env


async def run(
    captured: Captured, label: str, *args: str, env: dict[str, str], stop_after: float = 60
) -> int:
    """`syncer ARGS` to its end (or SIGINT after ``stop_after`` seconds); its exit status."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncer",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(stop_after):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.send_signal(signal.SIGINT)
        out, err = await proc.communicate()
    captured.add(f"{label}: stdout", out)
    captured.add(f"{label}: stderr", err)
    assert proc.returncode is not None
    return proc.returncode


AKSK_ENV = {
    "HUAWEICLOUD_SDK_AK": AK,
    "HUAWEICLOUD_SDK_SK": SK,
    "HUAWEICLOUD_SDK_PROJECT_ID": PROJECT,
}
WRONG_SK_ENV = AKSK_ENV | {"HUAWEICLOUD_SDK_SK": WRONG_SK}
IAM_ENV = {
    "HUAWEICLOUD_SDK_DOMAIN_NAME": "dom",
    "HUAWEICLOUD_SDK_USERNAME": "alice",
    "HUAWEICLOUD_SDK_PASSWORD": IAM_PASSWORD,
    "HUAWEICLOUD_SDK_PROJECT_ID": PROJECT,
}
WRONG_IAM_ENV = IAM_ENV | {"HUAWEICLOUD_SDK_PASSWORD": WRONG_IAM_PASSWORD}
STATIC_ENV = {"HUAWEICLOUD_SDK_TOKEN": STATIC_TOKEN, "HUAWEICLOUD_SDK_PROJECT_ID": PROJECT}
FEED_ENV = {"SYNCER_FEED_TOKEN": FEED_TOKEN}


async def echo_everything(seen: Seen) -> Answer:
    """A gateway (and IAM) that refuses everything and echoes what it was sent: every header
    and the body, in its message, its request id, and as plain text."""
    echo = f"{seen.headers} {seen.body.decode(errors='replace')}"
    request_id = seen.headers.get("X-Auth-Token") or seen.headers.get("Authorization", "")
    if seen.method == "POST":  # IAM: a non-JSON body, the password 100 characters in
        return Answer(401, body=("x" * 60 + echo).encode(), headers={"X-Request-Id": request_id})
    return Answer(
        401,
        {"error_code": "APIGW.0301", "error_msg": f"rejected: {echo}", "request_id": request_id},
    )


@dataclass
class Daemon:
    label: str
    proc: asyncio.subprocess.Process
    log: Path
    url: str


@contextlib.asynccontextmanager
async def daemon(
    label: str, cfg: Path, port: int, log: Path, env: dict[str, str], *flags: str
) -> AsyncIterator[Daemon]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "syncer", "--config", str(cfg), *flags, "run",
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
    d = Daemon(label, proc, log, f"http://127.0.0.1:{port}")
    try:
        yield d
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def readyz(http: aiohttp.ClientSession, d: Daemon) -> int:
    try:
        async with http.get(d.url + "/readyz") as r:
            return r.status
    except aiohttp.ClientError:
        return 0


async def all_answer(http: aiohttp.ClientSession, status: int, *daemons: Daemon) -> bool:
    return all([await readyz(http, d) == status for d in daemons])


async def raw(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def capture_http(
    captured: Captured, http: aiohttp.ClientSession, d: Daemon, *, stream: bool = True
) -> None:
    """Every route, with the feed token, without it and with a wrong one; requests the server's
    parser refuses (their first bytes go to its log)."""
    good = {"Authorization": f"Bearer {FEED_TOKEN}"}
    wrong = {"Authorization": f"Bearer {WRONG_FEED_TOKEN}"}
    cases: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("GET", "/healthz", {}, None),
        ("GET", "/readyz", {}, None),
        ("GET", "/metrics", {}, None),
        ("GET", "/metrics", {"Accept": "application/openmetrics-text"}, None),
        ("GET", "/", {}, None),
        ("GET", "/", {"Accept": "text/html"}, None),
        ("GET", "/v1/events?since=0&limit=1000", {}, None),
        ("GET", "/v1/events?since=0", wrong, None),
        ("GET", "/v1/events?since=0&limit=1000", good, None),
        ("GET", "/v1/events?since=nonsense", good, None),
        ("GET", "/v1/images?limit=1000", good, None),
        ("GET", "/v1/images", wrong, None),
        ("PUT", "/v1/consumers/audit", good, b'{"cursor": "0"}'),
        ("PUT", "/v1/consumers/audit", wrong, b'{"cursor": "0"}'),
        ("GET", "/v1/consumers", good, None),
        ("GET", "/v1/consumers/audit", good, None),
        ("GET", "/v1/consumers", {"Authorization": f"Basic {FEED_TOKEN}"}, None),
        ("GET", "/v1/nope", good, None),
        ("GET", "/v1/nope", {}, None),
    ]
    pages: list[bytes] = []
    for method, path, headers, body in cases:
        where = f"{d.label}: {method} {path} {sorted(headers)}"
        try:
            async with http.request(method, d.url + path, headers=headers, data=body) as r:
                text = await r.read()
                captured.add(where, f"{r.status}\n{dict(r.headers)}\n".encode() + text)
                if path == "/" and r.status == 200:
                    pages.append(text)
        except aiohttp.ClientError as e:
            captured.add(where, repr(e))
    # whatever the status page links to or fetches (its JSON routes, scripts): same origin
    for path in sorted({p for page in pages for p in linked_paths(page)})[:30]:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(2), http.get(d.url + path, headers=good) as r:
                text = await r.content.read(1 << 20)
                captured.add(f"{d.label}: GET {path} (linked from /)", text)
    # Requests the server's parser refuses: aiohttp logs (and answers to their sender) their
    # first bytes. Only the log is ours to check: the answer goes back to whoever sent them.
    for request in (
        b"GET /v1/events HTTP/1.1\r\nAuthorization: Bearer " + FEED_TOKEN.encode() + b"x" * 9000,
        b"GET /v1/events?token=" + FEED_TOKEN.encode() + b"&x=" + b"y" * 9000 + b" HTTP/1.1",
        b"GET /v1/events HTTP/1.1\r\nAuthorization Bearer " + FEED_TOKEN.encode(),
    ):
        with contextlib.suppress(OSError, TimeoutError):
            answer = await raw(d.url, request + b"\r\n\r\n")
            assert b" 400 " in answer[:20], answer[:100]
    if stream:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(d.url + "/v1/events/stream?since=0", headers=good) as r:
                chunks = []
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        async for chunk in r.content.iter_any():
                            chunks.append(chunk)
                captured.add(f"{d.label}: SSE stream", b"".join(chunks))


def linked_paths(page: bytes) -> set[str]:
    """Same-origin paths a page names in quotes: links, scripts, fetch('/...') calls."""
    text = page.decode("utf-8", "replace")
    return {m for m in re.findall(r"""["'`](/[A-Za-z0-9_./?=&%-]*)["'`]""", text) if m != "/"}


async def dump_database(captured: Captured, pg: EmbeddedPostgres) -> int:
    """Every row of every table and view in the app's schemas, as text; the number of rows."""
    conn = await asyncpg.connect(app_database(pg))
    rows = 0
    try:
        names = await conn.fetch(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('ims', 'public') AND c.relkind IN ('r', 'p', 'v', 'm')"
        )
        assert {"ims.image_rows", "ims.sync_runs", "public.alembic_version"} <= {
            r["name"] for r in names
        }
        for r in names:
            dump = await conn.fetch(f"SELECT t::text AS row FROM {r['name']} t")
            rows += len(dump)
            captured.add(f"table {r['name']}", "\n".join(d["row"] for d in dump))
    finally:
        await conn.close()
    return rows


async def swept_by(pg: EmbeddedPostgres, d: Daemon) -> bool:
    """A pass of daemon ``d`` completed."""
    conn = await asyncpg.connect(app_database(pg))
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM ims.sync_runs WHERE outcome = 'ok' AND worker LIKE $1",
                f"%:{d.proc.pid}",
            )
        )
    finally:
        await conn.close()


def daemon_rejected(echo: ScriptedIms) -> bool:
    return any(f"/{DAEMON_REGION}/" in seen.path for seen in echo.seen)


async def test_no_secret_leaves_the_process(tmp_path: Path, scratch: Path) -> None:
    captured = Captured()
    aksk_sim = Simulator(
        Catalog(regions=[AKSK_REGION, WRONG_SK_REGION], images_per_partition=8),
        auth="aksk",
        ak=AK,
        sk=SK,
        lockout_after=None,
    )
    token_sim = Simulator(
        Catalog(regions=[IAM_REGION, WRONG_IAM_REGION], images_per_partition=8, seed=6),
        auth="token",
        token=STATIC_TOKEN,
        iam_users={"dom/alice": IAM_PASSWORD},
    )
    with postgres_with_passwords(scratch / "pg") as pg:
        await prepare_database(pg)
        good = app_dsn(pg, DB_PASSWORD)
        async with (
            aksk_sim,
            token_sim,
            ScriptedIms(echo_everything) as echo,
            aiohttp.ClientSession() as http,
        ):
            ports: dict[str, int] = {}

            def cfg(name: str, *, auth: str = "aksk", region: str = AKSK_REGION, **kw: Any) -> Path:
                endpoint = {"aksk": aksk_sim, "token": token_sim}[auth].endpoint_template
                kw.setdefault("dsn", good)
                kw.setdefault("endpoint", endpoint)
                port = ports[name] = free_port()
                return config(tmp_path / f"{name}.toml", auth=auth, region=region, port=port, **kw)

            aksk = cfg("aksk")
            wrong_sk = cfg("wrong-sk", region=WRONG_SK_REGION)
            wrong_iam = cfg("wrong-iam", auth="token", region=WRONG_IAM_REGION)
            query_dsn = cfg("query-dsn", dsn=app_dsn(pg, DB_PASSWORD, in_query=True))
            bad_query_dsn = cfg("bad-query-dsn", dsn=app_dsn(pg, WRONG_DB_PASSWORD, in_query=True))
            echo_iam = cfg("echo-iam", auth="token", endpoint=echo.endpoint, region="af-south-1")
            echo_static = cfg("echo-static", auth="token", endpoint=echo.endpoint, region="me-1")
            # with the wrong SK, against a gateway that echoes what it is sent
            d_aksk = cfg("d-aksk", endpoint=echo.endpoint, region=DAEMON_REGION)
            d_iam = cfg("d-iam", auth="token", region=IAM_REGION)

            await migrate(good)
            async with (
                daemon("daemon aksk", d_aksk, ports["d-aksk"], tmp_path / "d-aksk.log",
                       environment(**WRONG_SK_ENV, **FEED_ENV), "--log-format", "text") as a,
                daemon("daemon iam", d_iam, ports["d-iam"], tmp_path / "d-iam.log",
                       environment(**IAM_ENV, **FEED_ENV)) as b,
                daemon("daemon wrong dsn password", bad_query_dsn, ports["bad-query-dsn"],
                       tmp_path / "d-bad.log", environment(**AKSK_ENV, **FEED_ENV)) as c,
            ):  # fmt: skip
                # ---- the command line, while the daemons start
                codes = await asyncio.gather(
                    run(captured, "migrate, password in the query", "--config", str(query_dsn),
                        "migrate", env=environment()),
                    run(captured, "sync aksk", "-vv", "--config", str(aksk), "sync", "--once",
                        env=environment(**AKSK_ENV)),
                    run(captured, "sync wrong sk", "-vv", "--log-format", "text", "--config",
                        str(wrong_sk), "sync", "--once", env=environment(**WRONG_SK_ENV)),
                    run(captured, "sync wrong iam password", "-vv", "--config", str(wrong_iam),
                        "sync", "--once", env=environment(**WRONG_IAM_ENV)),
                    run(captured, "sync wrong dsn password", "-vv", "--config",
                        str(bad_query_dsn), "sync", "--once", env=environment(**AKSK_ENV)),
                    run(captured, "sync, echoing IAM", "-vv", "--config", str(echo_iam), "sync",
                        "--once", env=environment(**IAM_ENV)),
                    run(captured, "sync, echoing gateway, static token", "--config",
                        str(echo_static), "sync", "--once", env=environment(**STATIC_ENV)),
                )  # fmt: skip
                assert codes[:2] == [0, 0] and all(c != 0 for c in codes[2:]), f"{codes}\n" + (
                    "\n".join(v for k, v in captured.texts.items() if k.startswith("sync aksk"))
                )
                assert "password=***" in captured.texts["migrate, password in the query: stdout"]
                assert "HTTP 401" in captured.texts["sync wrong sk: stdout"]
                assert "authentication failed" in captured.texts["sync wrong dsn password: stderr"]
                echoed = {(seen.method, seen.path.split("/")[1]) for seen in echo.seen}
                assert {("POST", "af-south-1"), ("GET", "me-1")} <= echoed, echoed

                # ---- the daemons; their database goes away and comes back
                await until(lambda: all_answer(http, 200, a, b), 30, "daemons ready")
                await until(lambda: daemon_rejected(echo), 15, "the daemon's 401")
                await until(lambda: swept_by(pg, b), 20, "a pass with an IAM-issued token")
                for d in (a, b, c):
                    await capture_http(captured, http, d)
                pg.stop()
                await until(lambda: all_answer(http, 503, a, b), 15, "503 without the database")
                for d in (a, b):
                    await capture_http(captured, http, d, stream=False)
                pg.start()
                await until(lambda: all_answer(http, 200, a, b), 40, "200 once it is back")
                codes = await asyncio.gather(
                    capture_http(captured, http, a),
                    capture_http(captured, http, b),
                    run(captured, "status", "--config", str(d_aksk), "status", env=environment()),
                    run(captured, "status json", "--config", str(d_iam), "status", "--json",
                        env=environment()),
                )  # fmt: skip
                assert codes[2] == 4, captured.texts["status: stdout"]  # the rejected AK/SK
            for d in (a, b, c):
                assert d.proc.returncode == 0, d.label
                captured.add(f"{d.label}: log", d.log.read_bytes())
            assert "AK/SK rejected" in captured.texts["daemon aksk: log"]
            assert "waiting for it" in captured.texts["daemon wrong dsn password: log"]

            issued = list(token_sim.gate.tokens)
            assert issued  # the daemon's (the echoing IAM issues none)
            assert await dump_database(captured, pg) > 100
            captured.add("postgres.log", (pg.root / "postgres.log").read_bytes())

    secrets = SECRETS | {f"IAM-issued token {i}": t for i, t in enumerate(issued)}
    leaks = captured.leaks(secrets)
    assert not leaks, "\n".join(leaks)
    # the search finds what it looks for
    probe = Captured()
    probe.add("probe", f"x {quote(DB_PASSWORD, safe='')} y {issued[0][5:30]}")
    assert len(probe.leaks(secrets)) == 2
