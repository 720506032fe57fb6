"""A private, throwaway PostgreSQL server: for the test suite and for ``syncer demo``.

Binaries are taken, in this order, from ``SYNCER_PG_BIN`` (a directory), the PATH,
``/usr/lib/postgresql/<newest>/bin``, and the ``pgserver`` wheel (PostgreSQL bundled in a pip
package), so a machine with no PostgreSQL installed still works. ``SYNCER_PG_BINARIES=pgserver``
forces the wheel. As root the server runs as an unprivileged OS user (``postgres``, else
``pgserver``, else ``nobody``) because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from syncer.errors import DatabaseError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Binaries:
    bin_dir: Path
    source: str  # "env", "path", "system", "pgserver"

    def __getitem__(self, name: str) -> str:
        return str(self.bin_dir / name)


def find_binaries(prefer: str | None = None) -> Binaries:
    """Locate initdb/postgres/pg_isready. ``prefer="pgserver"`` skips the system ones."""
    prefer = prefer or os.environ.get("SYNCER_PG_BINARIES") or None
    if prefer != "pgserver":
        if env_dir := os.environ.get("SYNCER_PG_BIN"):
            return Binaries(Path(env_dir), "env")
        initdb = shutil.which("initdb")
        if initdb and shutil.which("postgres"):
            return Binaries(Path(initdb).parent, "path")
        candidates = sorted(
            glob.glob("/usr/lib/postgresql/*/bin/initdb"),
            key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")],
        )
        if candidates:
            return Binaries(Path(candidates[-1]).parent, "system")
    try:
        with warnings.catch_warnings():  # pgserver's platformdirs warns about XDG_RUNTIME_DIR
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        raise DatabaseError(
            "no PostgreSQL binaries found: install PostgreSQL, set SYNCER_PG_BIN, "
            "or `pip install pgserver`"
        ) from None
    return Binaries(Path(pgserver.__file__).parent / "pginstall" / "bin", "pgserver")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserver", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise DatabaseError(
        "running as root and no unprivileged user (postgres, nobody) to run PostgreSQL"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class EmbeddedPostgres:
    """``with EmbeddedPostgres() as pg: pg.dsn`` — a superuser DSN on 127.0.0.1.

    The data directory is a temporary one (removed on exit) unless ``data_dir`` is given, in
    which case it is kept and reused. ``durable=False`` turns fsync off: for tests only.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        durable: bool = True,
        binaries: Binaries | None = None,
    ) -> None:
        self.binaries = binaries or find_binaries()
        self._keep = data_dir is not None
        self.root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="syncer-pg-"))
        self.port = port or _free_port()
        self.durable = durable
        self._proc: subprocess.Popen[bytes] | None = None
        self._user = _run_as()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _popen_kwargs(self) -> dict[str, object]:
        if self._user is None:
            return {"preexec_fn": _die_with_parent}
        return {
            "user": self._user.pw_uid,
            "group": self._user.pw_gid,
            "extra_groups": [],
            "preexec_fn": _die_with_parent,
        }

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def start(self) -> EmbeddedPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        self._chown(self.root)
        (self.root / "run").mkdir(exist_ok=True)
        self._chown(self.root / "run")
        if not (self.data / "PG_VERSION").exists():
            cmd = [
                self.binaries["initdb"],
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ]
            if not self.durable:
                cmd.append("--no-sync")
            done = subprocess.run(cmd, capture_output=True, cwd=self.root, **self._popen_kwargs())  # type: ignore[call-overload]
            if done.returncode != 0:
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
                raise DatabaseError(
                    f"initdb failed ({self.binaries.source} binaries): {' '.join(tail)}"
                )
        args = [
            self.binaries["postgres"],
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.root / "run"),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
        ]
        if not self.durable:
            args += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        logfile = open(self.root / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
        self._proc = subprocess.Popen(  # type: ignore[call-overload]
            args, stdout=logfile, stderr=subprocess.STDOUT, cwd=self.root, **self._popen_kwargs()
        )
        logfile.close()
        self._wait_ready()
        log.info(
            "embedded PostgreSQL started", extra={"port": self.port, "source": self.binaries.source}
        )
        return self

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise DatabaseError(f"embedded PostgreSQL exited at start-up: {self.log_tail()}")
            # postmaster.pid's 8th line is the server's status ("ready" once it accepts connections)
            with contextlib.suppress(OSError):
                lines = (self.data / "postmaster.pid").read_text().splitlines()
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return
            time.sleep(0.05)
        self.stop()
        raise DatabaseError(
            f"embedded PostgreSQL not ready after {timeout:.0f}s: {self.log_tail()}"
        )

    def log_tail(self) -> str:
        try:
            lines = (self.root / "postgres.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if not self._keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
