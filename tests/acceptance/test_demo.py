"""`syncer demo` (the README's first command) runs end to end on a bare machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.acceptance.test_cli import one_line_error, syncer
from tests.integration.test_embedded import LOCKED_MODE, copy_wheel_into

NO_SYSTEM_POSTGRES = {"SYNCER_PG_BINARIES": "pgserver", "PATH": "/usr/bin:/bin"}


def test_demo_runs_the_whole_pipeline() -> None:
    done = syncer("demo", "--images-per-partition", "60", timeout=180)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "first full sync" in out
    # the scripted changes of the demo, as a feed consumer sees them
    for kind in ("created", "status_chan", "updated", "deleted"):
        assert kind in out, kind
    assert "cn-north-4/private 60" in out  # +1 upload, -1 deleted


def test_demo_on_a_machine_without_postgresql() -> None:
    """System binaries hidden: the embedded database comes from the pgserver wheel."""
    done = syncer(
        "demo",
        "--images-per-partition",
        "20",
        env=NO_SYSTEM_POSTGRES,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "(pgserver binaries:" in done.stdout
    assert "deleted" in done.stdout


def test_demo_from_a_private_folder_without_postgresql(tmp_path: Path) -> None:
    """The clone, HOME, TMPDIR and the venv's pgserver wheel in a folder of mode 0700 (like
    /root). The venv itself stays where it is, so the wheel is copied into the private folder,
    first on PYTHONPATH: the demo finds its binaries there, as in a venv inside that folder.
    As root the server's OS user cannot enter it, and the demo runs a reachable copy instead."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "tmp").mkdir(mode=0o700)
    wheel_bin = copy_wheel_into(private / "site")
    done = syncer(
        "demo",
        "--images-per-partition",
        "20",
        env={
            **NO_SYSTEM_POSTGRES,
            "HOME": str(private),
            "TMPDIR": str(private / "tmp"),
            "PYTHONPATH": str(private / "site"),
            "COLUMNS": "400",  # one line per message, paths whole
        },
        cwd=private,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "deleted" in done.stdout
    found = re.search(r"\(pgserver binaries: (\S+)\)", done.stdout)
    assert found, done.stdout
    used = Path(found.group(1))
    if os.geteuid() == 0:
        assert not used.is_relative_to(private)
        assert (used / "postgres").read_bytes() == (wheel_bin / "postgres").read_bytes()
    else:
        assert used == wheel_bin


def test_demo_without_postgresql_or_the_wheel_says_how_to_get_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCER_")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",  # as if pgserver were not installed: an import of it fails, find_spec says None
            "import sys; sys.modules['pgserver'] = None; from syncer.cli import main; main()",
            "demo",
        ],
        capture_output=True,
        text=True,
        env={**env, **NO_SYSTEM_POSTGRES},
        timeout=60,
    )
    line = one_line_error(done)
    assert "no PostgreSQL binaries found" in line
    assert "pip install 'syncer[embedded]'" in line


def test_demo_with_unreachable_binaries_is_one_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    (locked / "bin").mkdir(parents=True)
    for name in ("initdb", "postgres"):
        (locked / "bin" / name).write_text("#!/bin/sh\nexit 1\n")
        (locked / "bin" / name).chmod(0o755)
    locked.chmod(LOCKED_MODE)
    try:
        done = syncer("demo", env={"SYNCER_PG_BIN": str(locked / "bin")})
    finally:
        locked.chmod(0o700)
    line = one_line_error(done)
    assert "internal error" not in line
    assert str(locked / "bin" / "initdb") in line
