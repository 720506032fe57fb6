"""The asyncpg pool and the translation of driver errors into one-line DatabaseErrors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from syncer.config import redact_dsn
from syncer.errors import DatabaseError


def _encode_jsonb(value: bytes | str) -> bytes:
    # jsonb's binary wire format: a version byte, then the JSON text.
    return b"\x01" + (value if isinstance(value, bytes) else value.encode())


def _decode_jsonb(data: bytes) -> str:
    return data[1:].decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection set-up: jsonb travels as JSON text in binary COPY and queries."""
    await conn.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


def describe(exc: BaseException, dsn: str) -> str:
    """A one-line reason for a connection failure, never including a password."""
    where = redact_dsn(dsn)
    if isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        return f"database {where}: authentication failed ({exc.__class__.__name__})"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"database {where}: {exc}"
    if isinstance(exc, OSError | asyncio.TimeoutError):
        reason = (
            exc.strerror if isinstance(exc, OSError) and exc.strerror else exc.__class__.__name__
        )
        return f"database {where} unreachable: {reason}"
    if isinstance(exc, asyncpg.PostgresError):
        return f"database {where}: {exc.__class__.__name__}: {exc}"
    return f"database {where}: {exc}"


async def open_pool(dsn: str, *, size: int = 10, connect_timeout: float = 10.0) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            timeout=connect_timeout,
            init=init_connection,
            server_settings={"application_name": "syncer"},
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as e:
        raise DatabaseError(describe(e, dsn)) from e
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def pool_session(
    dsn: str, *, size: int = 10, connect_timeout: float = 10.0
) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(dsn, size=size, connect_timeout=connect_timeout)
    try:
        yield pool
    finally:
        await asyncio.wait_for(pool.close(), timeout=10)


async def connect(dsn: str, *, connect_timeout: float = 10.0) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(dsn, timeout=connect_timeout)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as e:
        raise DatabaseError(describe(e, dsn)) from e
    await init_connection(conn)
    return conn
