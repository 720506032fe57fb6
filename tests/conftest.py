"""Shared fixtures: a real PostgreSQL for the whole session, a fresh database per test.

``SYNCER_TEST_DSN`` (a superuser DSN) points the suite at an existing server; otherwise the
session starts a throwaway cluster (see syncer.store.embedded) and removes it at the end, even
after a failure. The schema is migrated ONCE into a template database, by a login role that owns
the database but is neither superuser nor CREATEROLE, and every test gets a clone of it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from syncer.store.embedded import EmbeddedPostgres
from syncer.store.migrate import migrate
from syncer.store.verify import ReplayReport, verify_replay

OWNER = "syncer_owner"
TEMPLATE = "syncer_template"


def with_user_db(dsn: str, *, user: str | None = None, database: str | None = None) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    userinfo = user or parts.username or ""
    if parts.password and user is None:
        userinfo += f":{parts.password}"
    netloc = f"{userinfo}@{host}{port}" if userinfo else f"{host}{port}"
    path = f"/{database}" if database else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, ""))


@dataclass(frozen=True)
class PgServer:
    admin_dsn: str  # superuser

    def dsn(self, *, user: str | None = None, database: str | None = None) -> str:
        return with_user_db(self.admin_dsn, user=user, database=database)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    if dsn := os.environ.get("SYNCER_TEST_DSN"):
        yield PgServer(dsn)
        return
    with EmbeddedPostgres(durable=False) as pg:
        yield PgServer(pg.dsn)


@pytest.fixture(scope="session")
async def template_db(pg_server: PgServer) -> str:
    """Owner role + reader role (as an administrator would create it) + migrated template."""
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        for role, opts in (
            (OWNER, "LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB"),
            ("ims_reader", "NOLOGIN"),
        ):
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await conn.execute(f"CREATE ROLE {role} {opts}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE} OWNER {OWNER}")
    finally:
        await conn.close()
    owner_dsn = pg_server.dsn(user=OWNER, database=TEMPLATE)
    await migrate(owner_dsn)
    return TEMPLATE


@pytest.fixture
async def db(pg_server: PgServer, template_db: str) -> AsyncIterator[str]:
    """The DSN (as the owner role) of a fresh, migrated database for this test alone."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db} OWNER {OWNER}")
    finally:
        await conn.close()
    yield pg_server.dsn(user=OWNER, database=name)
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await asyncio.wait_for(conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"), 30)
    finally:
        await conn.close()


@pytest.fixture
async def empty_db(pg_server: PgServer, template_db: str) -> AsyncIterator[str]:
    """A fresh database owned by the owner role, with nothing migrated."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name} OWNER {OWNER}")
    finally:
        await conn.close()
    yield pg_server.dsn(user=OWNER, database=name)
    conn = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


CALL_FAILED = pytest.StashKey[bool]()


async def replay_report(dsn: str) -> ReplayReport:
    conn = await asyncpg.connect(dsn)
    try:
        return await verify_replay(conn)
    finally:
        await conn.close()


@pytest.fixture(autouse=True)
def replay_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that used a migrated database (``db``) ends with the replay check: the event
    log, folded over the state, finds exactly the rows (syncer.store.verify). A test that breaks
    the log or the rows on purpose says so with ``@pytest.mark.no_replay_check("why")``."""
    marker = request.node.get_closest_marker("no_replay_check")
    if marker is not None:
        assert marker.args and marker.args[0], "no_replay_check needs a reason"
    if "db" not in request.fixturenames or marker is not None:
        yield
        return
    dsn = request.getfixturevalue("db")  # set up now, so that it is torn down after this check
    yield
    if request.node.stash.get(CALL_FAILED, True):
        return  # the test's own failure says enough
    # on a loop of its own (the tests' loop is not running between fixtures)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        report = pool.submit(asyncio.run, replay_report(dsn)).result(timeout=120)
    if not report.ok:
        pytest.fail("\n".join(report.lines()), pytrace=False)
