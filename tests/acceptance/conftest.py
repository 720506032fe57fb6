"""Fixtures of the acceptance tier."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder the server's OS user can reach (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="syncer-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
