"""`syncer migrate` from two processes at once (two ExecStartPre=), and a schema the code does
not match, as a person sees them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg

from syncer.store.migrate import SCHEMA_REVISION, migrate
from tests.acceptance.test_cli import GOOD, one_line_error, syncer


def test_two_migrate_processes_at_once_both_succeed(tmp_path: Path, empty_db: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD.format(dsn=empty_db))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "HUAWEICLOUD_"))}
    command = [sys.executable, "-m", "syncer", "--config", str(path), "migrate"]
    processes = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    stdout = sorted(out.strip().splitlines()[0] for out, _ in outputs)
    assert stdout[0].startswith(f"schema already at revision {SCHEMA_REVISION}")
    assert stdout[1].startswith(f"schema migrated empty → {SCHEMA_REVISION}")


async def test_older_and_newer_schemas_are_one_line(tmp_path: Path, empty_db: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD.format(dsn=empty_db))
    await migrate(empty_db, revision="0001")
    line = one_line_error(syncer("--config", str(path), "status"))
    assert line == (
        f"syncer: database schema at revision 0001 is older than this code's {SCHEMA_REVISION}: "
        "run `syncer migrate`"
    )
    await migrate(empty_db)
    conn = await asyncpg.connect(empty_db)
    try:
        await conn.execute("UPDATE public.alembic_version SET version_num = '9999'")
    finally:
        await conn.close()
    line = one_line_error(
        syncer(
            "--config",
            str(path),
            "sync",
            "--once",
            env={
                "HUAWEICLOUD_SDK_AK": "ak",
                "HUAWEICLOUD_SDK_SK": "sk",
                "HUAWEICLOUD_SDK_PROJECT_ID": "p",
            },
        )
    )
    assert line == (
        f"syncer: database schema at revision 9999 is newer than this code's {SCHEMA_REVISION}: "
        "upgrade syncer"
    )
