"""The asyncpg pool and the translation of driver errors into one-line DatabaseErrors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Mapping

import asyncpg

from syncer.config import DatabaseSettings, redact_dsn
from syncer.errors import DatabaseError

# TCP keepalives, both ends: a peer that vanished (a frozen or cut-off replica, a dead server)
# is noticed in about KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT seconds.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 20, 5, 4


def session_settings(db: DatabaseSettings) -> dict[str, str]:
    """Server settings of every sync session: every wait bounded, dead clients noticed."""
    return {
        "application_name": "syncer",
        "lock_timeout": f"{int(db.lock_timeout * 1000)}ms",
        "statement_timeout": f"{int(db.statement_timeout * 1000)}ms",
        "idle_in_transaction_session_timeout": f"{int(db.idle_in_transaction_timeout * 1000)}ms",
        "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
        "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
        "tcp_keepalives_count": str(KEEPALIVE_COUNT),
        # The passes' statements are planned with enable_nestloop off (create_work_tables),
        # which prices them above jit_above_cost: JIT would compile ~0.7 s per written page.
        "jit": "off",
    }


def _client_keepalives(conn: asyncpg.Connection) -> None:
    """Keepalives on our end of the socket (asyncpg has no option for them)."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


def _encode_jsonb(value: bytes | str) -> bytes:
    # jsonb's binary wire format: a version byte, then the JSON text.
    return b"\x01" + (value if isinstance(value, bytes) else value.encode())


def _decode_jsonb(data: bytes) -> str:
    return data[1:].decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection set-up: keepalives; jsonb travels as JSON text in binary COPY and
    queries."""
    _client_keepalives(conn)
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


#: What a database session can fail with (the driver's errors, timeouts, lost sockets).
SESSION_ERRORS = (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def describe_session_error(e: BaseException) -> str:
    """One line for a database failure of a pass, naming what happened."""
    if isinstance(e, asyncpg.LockNotAvailableError):
        return f"a lock wait exceeded database.lock_timeout ({e})"
    if isinstance(e, asyncpg.QueryCanceledError):
        return f"a statement exceeded database.statement_timeout ({e})"
    if isinstance(
        e,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.exceptions.OperatorInterventionError
        | asyncpg.IdleInTransactionSessionTimeoutError
        | ConnectionError,
    ):
        return f"connection lost ({type(e).__name__}: {str(e).strip() or 'closed'})"
    if isinstance(e, TimeoutError):
        return "no answer in time (TimeoutError)"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


async def open_pool(
    dsn: str,
    *,
    size: int = 10,
    connect_timeout: float = 10.0,
    server_settings: Mapping[str, str] | None = None,
    command_timeout: float | None = None,
    lazy: bool = False,
    max_idle: float = 300.0,
) -> asyncpg.Pool:
    """A pool whose sessions carry ``server_settings`` (default: just the application name)
    and whose every query gives up client-side after ``command_timeout`` seconds. A ``lazy``
    pool connects on first use (so it can be opened while the database is down); a connection
    idle for ``max_idle`` seconds is closed (down to one)."""
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0 if lazy else 1,
            max_size=size,
            timeout=connect_timeout,
            command_timeout=command_timeout,
            init=init_connection,
            max_inactive_connection_lifetime=max_idle,
            server_settings=dict(server_settings or {"application_name": "syncer"}),
        )
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as e:
        raise DatabaseError(describe(e, dsn)) from e
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def pool_session(
    dsn: str,
    *,
    size: int = 10,
    connect_timeout: float = 10.0,
    server_settings: Mapping[str, str] | None = None,
    command_timeout: float | None = None,
    lazy: bool = False,
) -> AsyncIterator[asyncpg.Pool]:
    pool = await open_pool(
        dsn,
        size=size,
        connect_timeout=connect_timeout,
        server_settings=server_settings,
        command_timeout=command_timeout,
        lazy=lazy,
    )
    try:
        yield pool
    finally:
        await asyncio.wait_for(pool.close(), timeout=10)


async def connect(
    dsn: str, *, connect_timeout: float = 10.0, application_name: str | None = None
) -> asyncpg.Connection:
    settings = {"application_name": application_name} if application_name else None
    try:
        conn = await asyncpg.connect(dsn, timeout=connect_timeout, server_settings=settings)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as e:
        raise DatabaseError(describe(e, dsn)) from e
    await init_connection(conn)
    return conn


def sync_pool(
    db: DatabaseSettings, *, size: int, lazy: bool = False, name: str = "syncer"
) -> contextlib.AbstractAsyncContextManager[asyncpg.Pool]:
    """The pool of the sessions that run sync passes: ``session_settings`` on each, and every
    query bounded client-side too, past the server's own bound (a dead server or network
    answers nothing at all)."""
    return pool_session(
        db.dsn,
        size=size,
        connect_timeout=db.connect_timeout,
        server_settings=session_settings(db) | {"application_name": name},
        command_timeout=db.statement_timeout + 30.0,
        lazy=lazy,
    )
