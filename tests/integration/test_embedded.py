"""The embedded PostgreSQL (syncer.store.embedded) from private folders.

As root the server runs as another OS user, who cannot enter a folder of root's with mode 0700
(like /root, where a clone and its venv may live): the pgserver wheel's binaries are then run
from a reachable copy. As any other user the server runs as that user, and the binaries are run
where they are. Every failure to start is one line naming the cause and the way out.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from syncer.errors import EmbeddedServerError
from syncer.store.embedded import (
    Binaries,
    EmbeddedPostgres,
    copy_pgserver_install,
    find_binaries,
    first_unusable,
    persistent_data_dir,
    pgserver_cache_base,
    server_user,
)

AS_ROOT = os.geteuid() == 0
# A folder the server's OS user cannot enter: as root, one of root's with mode 0700 (the
# server runs as another user); otherwise the server runs as us, and only 0000 keeps us out.
LOCKED_MODE = 0o700 if AS_ROOT else 0o000


def copy_wheel_into(site: Path) -> Path:
    """The pgserver package, its pgserver.libs and dist-info, as in a venv's site-packages."""
    wheel = find_binaries("pgserver").bin_dir.parent.parent  # .../site-packages/pgserver
    shutil.copytree(
        wheel, site / "pgserver", symlinks=True, ignore=shutil.ignore_patterns("include")
    )
    for sibling in [wheel.parent / "pgserver.libs", *wheel.parent.glob("pgserver-*.dist-info")]:
        if sibling.is_dir():
            shutil.copytree(sibling, site / sibling.name)
    return site / "pgserver" / "pginstall" / "bin"


@pytest.fixture(scope="module")
def private_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    private = tmp_path_factory.mktemp("private")
    private.chmod(0o700)
    return private


@pytest.fixture(scope="module")
def private_pgserver(private_folder: Path) -> Binaries:
    """The pgserver wheel's binaries inside a 0700 folder, as in a venv under /root."""
    return Binaries(copy_wheel_into(private_folder / "site"), "pgserver")


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "locked"
    folder.mkdir()
    yield folder
    folder.chmod(0o700)  # so that pytest can clean up


async def server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def postmaster(pg: EmbeddedPostgres) -> tuple[Path, int]:
    """The executable the running server was started from, and its OS user id."""
    assert pg.pid is not None
    running = Path(os.readlink(f"/proc/{pg.pid}/exe"))
    assert running == Path(pg.binaries["postgres"]).resolve()
    return running, os.stat(f"/proc/{pg.pid}").st_uid


async def test_pgserver_binaries_in_a_private_folder(
    private_pgserver: Binaries, private_folder: Path
) -> None:
    user = server_user()
    with EmbeddedPostgres(binaries=private_pgserver, durable=False) as pg:
        assert (await server_version(pg.dsn)).startswith("16.")  # the wheel's, not the system's 15
        running, uid = postmaster(pg)
        assert uid == (user.pw_uid if user else os.getuid())
        if user is None:  # the server runs as us: the binaries are run where they are
            assert pg.binaries == private_pgserver
            assert running.is_relative_to(private_folder)
        else:  # the server's user cannot enter the private folder: a reachable copy is run
            assert first_unusable(user, [("-x", private_pgserver.bin_dir / "postgres")])
            assert pg.binaries.copied_from == private_pgserver.bin_dir
            assert running.is_relative_to(pgserver_cache_base())
            assert not running.is_relative_to(private_folder)
        root = pg.root
    assert not root.exists()  # a temporary data directory goes away with the server


async def test_a_persistent_data_dir_is_reachable_and_reused(
    private_pgserver: Binaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    name = f"test-{uuid.uuid4().hex[:8]}"
    data_dir = persistent_data_dir(name)
    if AS_ROOT:  # root's home is private to root, so not there
        assert data_dir == Path("/var/lib/syncer") / name
    else:
        assert data_dir == home / "syncer" / name
    try:
        with EmbeddedPostgres(data_dir, binaries=private_pgserver, durable=False) as pg:
            conn = await asyncpg.connect(pg.dsn)
            await conn.execute("CREATE TABLE kept AS SELECT 42 AS answer")
            await conn.close()
        assert (data_dir / "data" / "PG_VERSION").exists()
        with EmbeddedPostgres(data_dir, binaries=private_pgserver, durable=False) as pg:
            conn = await asyncpg.connect(pg.dsn)
            assert await conn.fetchval("SELECT answer FROM kept") == 42
            await conn.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_a_server_killed_before_is_waited_for_on_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed server leaves postmaster.pid saying "ready": the next start waits for ITS
    server (a demo killed with SIGKILL, then run again)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    data_dir = persistent_data_dir(f"test-{uuid.uuid4().hex[:8]}")
    try:
        killed = EmbeddedPostgres(data_dir, durable=False).start()
        assert killed._proc is not None
        killed._proc.kill()
        killed._proc.wait()
        pid_file = (data_dir / "data" / "postmaster.pid").read_text().splitlines()
        assert pid_file[7].strip() == "ready"  # what the next start must not believe
        with EmbeddedPostgres(data_dir, durable=False) as pg:
            conn = await asyncpg.connect(pg.dsn, timeout=5)
            assert await conn.fetchval("SELECT pg_backend_pid() > 0")
            await conn.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def one_line(e: pytest.ExceptionInfo[EmbeddedServerError]) -> str:
    message = str(e.value)
    assert message and "\n" not in message
    return message


def test_an_unreachable_data_dir_is_one_line(private_pgserver: Binaries, locked: Path) -> None:
    locked.chmod(LOCKED_MODE)
    with pytest.raises(EmbeddedServerError) as e:
        EmbeddedPostgres(locked / "pg", binaries=private_pgserver).start()
    message = one_line(e)
    assert f"cannot reach the data directory {locked / 'pg'}" in message
    assert "choose a data directory" in message
    locked.chmod(0o700)
    assert not (locked / "pg").exists()  # nothing was created


def test_unreachable_binaries_are_one_line(locked: Path) -> None:
    """Binaries other than the wheel's are never copied: out of reach, they are an error."""
    bin_dir = locked / "bin"
    bin_dir.mkdir()
    for name in ("initdb", "postgres"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    locked.chmod(LOCKED_MODE)
    with pytest.raises(EmbeddedServerError) as e:
        EmbeddedPostgres(binaries=Binaries(bin_dir, "env")).start()
    message = one_line(e)
    assert str(bin_dir / "initdb") in message
    assert "SYNCER_PG_BIN" in message


def test_missing_binaries_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServerError) as e:
        EmbeddedPostgres(binaries=Binaries(tmp_path, "env")).start()
    assert f"no initdb in {tmp_path}" in one_line(e)
    assert "pip install 'syncer[embedded]'" in str(e.value)


def test_a_port_in_use_is_one_line(private_pgserver: Binaries) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        pg = EmbeddedPostgres(port=port, binaries=private_pgserver, durable=False)
        with pytest.raises(EmbeddedServerError) as e:
            pg.start()
    assert f"port {port} on 127.0.0.1 is already in use" in one_line(e)
    assert pg.pid is None  # no server left behind


def test_concurrent_copies_of_the_wheel_share_one_complete_copy(
    private_pgserver: Binaries, tmp_path: Path
) -> None:
    base = tmp_path / "cache"
    base.mkdir(mode=0o755)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(
            lambda _: copy_pgserver_install(private_pgserver.bin_dir, base), range(2)
        )
    assert first == second
    assert [p.name for p in base.iterdir()] == [first.parents[2].name]  # nothing half-made left
    # initdb finds the wheel's libpq through RPATH $ORIGIN/../../../pgserver.libs: layout kept
    done = subprocess.run([first / "initdb", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "16." in done.stdout, done.stderr
    # a damaged copy (a cleaner took a file out of it) is replaced, not used
    bki = first.parent / "share" / "postgresql" / "postgres.bki"
    bki.unlink()
    assert copy_pgserver_install(private_pgserver.bin_dir, base) == first
    assert bki.exists()
    assert [p.name for p in base.iterdir()] == [first.parents[2].name]


def test_a_cache_others_may_write_to_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is run from the cache must not be replaceable by another user."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("SYNCER_PG_CACHE", str(shared))
    with pytest.raises(EmbeddedServerError) as e:
        pgserver_cache_base()
    assert "set SYNCER_PG_CACHE to a folder you own" in one_line(e)
