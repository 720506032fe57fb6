"""`syncer migrate`: alembic ``upgrade head``, then the reader role and its grants.

Runs as the database's owner. It needs neither superuser nor CREATEROLE: where it may not
create the ``ims_reader`` role it says so and hands back the SQL an administrator runs.

Replicas may migrate at once (two ``ExecStartPre=syncer migrate``): each holds a session
advisory lock for its whole migration (alembic runs in a thread on a connection of its own, the
lock stays on ours), so they take turns and the second finds the schema up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from syncer.errors import MigrationError
from syncer.store.pool import connect, describe

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

#: The revision this code reads and writes. Checked at start-up without importing alembic
#: (half a second of every `syncer sync --once`); a test keeps it equal to alembic's head.
SCHEMA_REVISION = "0005"

# pg_advisory_lock(int, int) key of migrations (partition passes use 7_140_202).
MIGRATION_LOCK = (7_140_203, 0)
MIGRATION_LOCK_TIMEOUT = 600.0  # seconds a migration waits for another one to finish

READER_ROLE = "ims_reader"
# The SQL surface of CONTRACT §3 (and the feed's consumer offsets, §5); the reader role gets
# SELECT on these and nothing else.
SURFACE = (
    "ims.images",
    "ims.current_images",
    "ims.image_events",
    "ims.sync_runs",
    "ims.feed_consumers",
)
# Views and functions for reporting tools (docs/sql.md), built on the surface: SELECT on the
# views, EXECUTE on the functions. Views run with their owner's rights, so granting them does
# not open ims.image_rows or ims.partitions to the reader.
REPORTING_VIEWS = (
    "ims.live_image_counts",
    "ims.status_transitions_daily",
    "ims.images_in_progress",
    "ims.killed_images",
    "ims.deleted_images",
    "ims.recently_deleted",
    "ims.partition_freshness",
    "ims.failing_partitions",
)
REPORTING_FUNCTIONS = ("ims.stuck_images(interval)",)


@dataclass(frozen=True)
class MigrateResult:
    before: str | None
    after: str | None
    reader_role: str  # "created", "present" or "missing"
    admin_sql: str | None  # what an administrator runs when the role is missing


def alembic_config(dsn: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    # `migrations/` ships as the package syncer.migrations (see pyproject.toml)
    location = Path(str(files("syncer.migrations").joinpath("env.py"))).parent
    cfg.set_main_option("script_location", str(location))
    url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1).replace(
        "postgres://", "postgresql+asyncpg://", 1
    )
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def grant_sql(
    role: str = READER_ROLE,
    relations: Sequence[str] = SURFACE + REPORTING_VIEWS,
    functions: Sequence[str] = REPORTING_FUNCTIONS,
) -> list[str]:
    return (
        [f"GRANT USAGE ON SCHEMA ims TO {role}"]
        + [f"GRANT SELECT ON {t} TO {role}" for t in relations]
        + [f"GRANT EXECUTE ON FUNCTION {f} TO {role}" for f in functions]
    )


async def _present_grants(conn: asyncpg.Connection, role: str) -> list[str]:
    """The grants of objects the schema has: a migration to an older revision (``revision=``)
    lacks the newer ones."""
    relations = await conn.fetchval(
        "SELECT coalesce(array_agg(r ORDER BY o), '{}') FROM unnest($1::text[]) "
        "WITH ORDINALITY AS t(r, o) WHERE to_regclass(r) IS NOT NULL",
        [*SURFACE, *REPORTING_VIEWS],
    )
    functions = await conn.fetchval(
        "SELECT coalesce(array_agg(f ORDER BY o), '{}') FROM unnest($1::text[]) "
        "WITH ORDINALITY AS t(f, o) WHERE to_regprocedure(f) IS NOT NULL",
        list(REPORTING_FUNCTIONS),
    )
    return grant_sql(role, relations, functions)


async def schema_revision(conn: asyncpg.Connection | asyncpg.Pool) -> str | None:
    """The database's alembic revision, None when it was never migrated."""
    # Two statements: a query naming a missing table fails at parse time, whatever CASE says.
    if not await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL"):
        return None
    revision = await conn.fetchval("SELECT version_num FROM public.alembic_version")
    return None if revision is None else str(revision)


async def current_revision(dsn: str) -> str | None:
    conn = await connect(dsn)
    try:
        return await schema_revision(conn)
    finally:
        await conn.close()


async def ensure_reader_role(dsn: str, role: str = READER_ROLE) -> tuple[str, str | None]:
    conn = await connect(dsn)
    try:
        status = "present"
        grants = await _present_grants(conn, role)
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            can = await conn.fetchval(
                "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
            )
            if not can:
                sql = ";\n".join([f"CREATE ROLE {role} NOLOGIN", *grants]) + ";"
                return "missing", sql
            try:
                await conn.execute(f"CREATE ROLE {role} NOLOGIN")
                status = "created"
            except asyncpg.DuplicateObjectError:
                pass  # another database's migration of this cluster created it meanwhile
        async with conn.transaction():
            for stmt in grants:
                await conn.execute(stmt)
        return status, None
    except asyncpg.PostgresError as e:
        raise MigrationError(f"granting {role}: {describe(e, dsn)}") from e
    finally:
        await conn.close()


def _run_alembic(dsn: str, action: str, revision: str) -> None:
    from alembic import command

    cfg = alembic_config(dsn)
    try:
        if action == "upgrade":
            command.upgrade(cfg, revision)
        else:
            command.downgrade(cfg, revision)
    except Exception as e:  # alembic and the driver raise many kinds; one line for a person
        cause = e.__cause__ or e
        msg = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        raise MigrationError(
            f"{action} to {revision} failed: {msg[0] if msg else type(cause).__name__}"
        ) from e


@contextlib.asynccontextmanager
async def migration_lock(
    dsn: str, wait_at_most: float = MIGRATION_LOCK_TIMEOUT
) -> AsyncIterator[asyncpg.Connection]:
    """Hold the database's migration lock (waiting at most ``wait_at_most`` seconds for another
    migration to finish); yields the connection that holds it. Closing it releases the lock,
    also when the process dies."""
    conn = await connect(dsn)
    try:
        await _take_migration_lock(conn, dsn, wait_at_most)
        yield conn
    finally:
        await conn.close()


async def _take_migration_lock(conn: asyncpg.Connection, dsn: str, wait_at_most: float) -> None:
    try:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *MIGRATION_LOCK):
            return
        log.warning(
            "another syncer migration is running on this database; waiting for it",
            extra={"wait_at_most": wait_at_most},
        )
        # lock_timeout bounds the wait for an advisory lock too
        await conn.execute(
            "SELECT set_config('lock_timeout', $1, false)", f"{int(wait_at_most * 1000)}"
        )
        await conn.execute("SELECT pg_advisory_lock($1, $2)", *MIGRATION_LOCK)
        await conn.execute("RESET lock_timeout")
    except asyncpg.LockNotAvailableError:
        raise MigrationError(
            f"another migration of this database held its lock for more than "
            f"{wait_at_most:g}s; try again when it has finished"
        ) from None
    except asyncpg.PostgresError as e:
        raise MigrationError(f"taking the migration lock: {describe(e, dsn)}") from e


async def migrate(
    dsn: str,
    *,
    revision: str = "head",
    reader_role: str = READER_ROLE,
    lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
) -> MigrateResult:
    """Bring the schema to ``revision`` (default: newest); safe to run again, and at once from
    several processes (they take turns)."""
    async with migration_lock(dsn, lock_timeout) as conn:
        before = await schema_revision(conn)
        await asyncio.to_thread(_run_alembic, dsn, "upgrade", revision)
        after = await schema_revision(conn)
        status, admin_sql = await ensure_reader_role(dsn, reader_role)
    return MigrateResult(before, after, status, admin_sql)


async def downgrade(dsn: str, revision: str) -> str | None:
    async with migration_lock(dsn) as conn:
        await asyncio.to_thread(_run_alembic, dsn, "downgrade", revision)
        return await schema_revision(conn)


def revision_order(revision: str) -> int | None:
    """Revisions are numbered ("0001", "0002", …; a test keeps it so): their order, or None
    for a revision this numbering does not know."""
    return int(revision) if revision.isdigit() else None


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(
        alembic_config("postgresql://unused/unused")
    ).get_current_head()
