"""`syncer migrate`: alembic ``upgrade head``, then the reader role and its grants.

Runs as the database's owner. It needs neither superuser nor CREATEROLE: where it may not
create the ``ims_reader`` role it says so and hands back the SQL an administrator runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from syncer.errors import MigrationError
from syncer.store.pool import connect, describe

if TYPE_CHECKING:
    from alembic.config import Config

#: The revision this code reads and writes. Checked at start-up without importing alembic
#: (half a second of every `syncer sync --once`); a test keeps it equal to alembic's head.
SCHEMA_REVISION = "0002"

READER_ROLE = "ims_reader"
# The SQL surface of CONTRACT §3; the reader role gets SELECT on these and nothing else.
SURFACE = ("ims.images", "ims.current_images", "ims.image_events", "ims.sync_runs")


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


def grant_sql(role: str = READER_ROLE) -> list[str]:
    return [f"GRANT USAGE ON SCHEMA ims TO {role}"] + [
        f"GRANT SELECT ON {t} TO {role}" for t in SURFACE
    ]


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
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            can = await conn.fetchval(
                "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
            )
            if not can:
                sql = ";\n".join([f"CREATE ROLE {role} NOLOGIN", *grant_sql(role)]) + ";"
                return "missing", sql
            await conn.execute(f"CREATE ROLE {role} NOLOGIN")
            status = "created"
        async with conn.transaction():
            for stmt in grant_sql(role):
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


async def migrate(
    dsn: str, *, revision: str = "head", reader_role: str = READER_ROLE
) -> MigrateResult:
    """Bring the schema to ``revision`` (default: newest); safe to run again."""
    before = await current_revision(dsn)
    await asyncio.to_thread(_run_alembic, dsn, "upgrade", revision)
    after = await current_revision(dsn)
    status, admin_sql = await ensure_reader_role(dsn, reader_role)
    return MigrateResult(before, after, status, admin_sql)


async def downgrade(dsn: str, revision: str) -> str | None:
    await asyncio.to_thread(_run_alembic, dsn, "downgrade", revision)
    return await current_revision(dsn)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(
        alembic_config("postgresql://unused/unused")
    ).get_current_head()
