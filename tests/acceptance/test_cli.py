"""The `syncer` command as a subprocess: one clear line for every bad input, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncer.store.migrate import SCHEMA_REVISION

GOOD = """
[database]
dsn = "{dsn}"
[sync]
regions = ["cn-north-4"]
"""


def syncer(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SYNCER_", "HUAWEICLOUD_"))
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "syncer", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("syncer: ")
    return lines[0]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[sync]\nregions = ['cn-north-4']\n", "database.dsn is required"),
        (
            "[database]\ndsn = 'postgresql://u@h/d'\n[sync]\nregions = 'cn-north-4'\n",
            "sync.regions must be a list",
        ),
        ("[database]\ndsn = 'mysql://u@h/d'\n[sync]\nregions = ['r']\n", "bad database DSN"),
        ("[database\n", "not valid TOML"),
        (
            "[database]\ndsn = 'postgresql://u@h/d'\n[api]\nca_file = 'no/such/ca.pem'\n"
            "[sync]\nregions = ['r']\n",
            "api.ca_file",
        ),
        (
            "[database]\ndsn = 'postgresql://u@h/d'\n[api]\nverify = false\n"
            "[sync]\nregions = ['r']\n",
            "TLS verification cannot be turned off",
        ),
    ],
)
def test_bad_config_is_one_line(tmp_path: Path, config: str, expected: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config)
    line = one_line_error(syncer("--config", str(path), "migrate"))
    assert str(path) in line and expected in line


def test_missing_config_file(tmp_path: Path) -> None:
    line = one_line_error(syncer("--config", str(tmp_path / "nope.toml"), "status"))
    assert "no such file" in line


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD.format(dsn="postgresql://syncer:secret@127.0.0.1:1/syncer"))
    for command in (["migrate"], ["status"], ["sync", "--once"]):
        line = one_line_error(
            syncer(
                "--config",
                str(path),
                *command,
                env={
                    "HUAWEICLOUD_SDK_AK": "a",
                    "HUAWEICLOUD_SDK_SK": "b",
                    "HUAWEICLOUD_SDK_PROJECT_ID": "p",
                },
            )
        )
        assert "unreachable" in line and "secret" not in line


def test_missing_credentials_is_one_line(tmp_path: Path, db: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD.format(dsn=db))
    line = one_line_error(syncer("--config", str(path), "sync", "--once"))
    assert "HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK not set" in line


def test_unknown_key_warns_but_runs(tmp_path: Path, db: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD.format(dsn=db) + "delete_after_missed_sweep = 3\n")
    done = syncer("--config", str(path), "migrate")
    assert done.returncode == 0, done.stderr
    assert "unknown key sync.delete_after_missed_sweep ignored" in done.stderr
    assert f"schema already at revision {SCHEMA_REVISION}" in done.stdout


def test_migrate_on_empty_database_then_again(tmp_path: Path, empty_db: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD.format(dsn=empty_db))
    first = syncer("--config", str(path), "migrate")
    assert first.returncode == 0, first.stderr
    assert f"schema migrated empty → {SCHEMA_REVISION}" in first.stdout
    second = syncer("--config", str(path), "migrate")
    assert second.returncode == 0 and f"already at revision {SCHEMA_REVISION}" in second.stdout


def test_status_refuses_an_unmigrated_database(tmp_path: Path, empty_db: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(GOOD.format(dsn=empty_db))
    line = one_line_error(syncer("--config", str(path), "status"))
    assert "not migrated: run `syncer migrate` first" in line
