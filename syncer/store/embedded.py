"""A private PostgreSQL server: for the test suite and for ``syncer demo``.

Binaries are taken, in this order, from ``SYNCER_PG_BIN`` (a directory), the PATH,
``/usr/lib/postgresql/<newest>/bin``, and the ``pgserver`` wheel (PostgreSQL bundled in a pip
package: ``pip install 'syncer[embedded]'``), so a machine with no PostgreSQL installed still
works. ``SYNCER_PG_BINARIES=pgserver`` forces the wheel.

PostgreSQL refuses to run as root, so as root the server runs as an unprivileged OS user
(:func:`server_user`: ``postgres``, else ``pgserver``, else ``nobody``). That user must reach the
binaries and the data directory, which a private folder (mode 0700, like ``/root``) on the way
prevents. So before anything runs, the paths the server needs are probed AS THAT USER (a shell
started with the server's own credentials runs ``test -x``/``-r``/``-w``, so modes, ownership
and ACLs all count). Then:

- the pgserver wheel's install, when unreachable (a venv inside a private folder), is copied
  once into a cache the user can reach (:func:`copy_pgserver_install`):
  ``/var/cache/syncer/pgserver-<version>-<content hash>`` (else ``/var/tmp/syncer-<uid>``;
  ``SYNCER_PG_CACHE`` names another base), created atomically, so concurrent runs share one
  copy and never see half of one. Other binaries are never copied: unreachable ones are an error;
- a temporary data directory goes under the temp folder, or ``/tmp`` when that is private;
- a given data directory that the user cannot reach is an error; :func:`persistent_data_dir`
  names one it can reach that stays the same between runs (for data kept between runs).

Every failure to start is an :class:`~syncer.errors.EmbeddedServerError` whose message is one
line naming the cause and the way out.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from syncer.errors import EmbeddedServerError

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

GET_BINARIES = (
    "`pip install 'syncer[embedded]'` (PostgreSQL in a wheel), install PostgreSQL, "
    "or set SYNCER_PG_BIN to its bin directory"
)


@dataclass(frozen=True)
class Binaries:
    bin_dir: Path
    source: str  # "env", "path", "system", "pgserver"
    copied_from: Path | None = None  # the wheel's own bin dir, when bin_dir is a reachable copy

    def __getitem__(self, name: str) -> str:
        return str(self.bin_dir / name)


def find_binaries(prefer: str | None = None) -> Binaries:
    """Locate initdb/postgres. ``prefer="pgserver"`` skips the system ones."""
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
    # Located, not imported: importing pgserver lists its bin dir and sets up platformdirs.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        forced = " (SYNCER_PG_BINARIES=pgserver)" if prefer == "pgserver" else ""
        raise EmbeddedServerError(f"no PostgreSQL binaries found{forced}: {GET_BINARIES}")
    package = Path(next(iter(spec.submodule_search_locations)))
    return Binaries(package / "pginstall" / "bin", "pgserver")


def server_user() -> pwd.struct_passwd | None:
    """The OS user the server runs as; None means this process's own user (when not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "pgserver", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise EmbeddedServerError(
        "running as root and no unprivileged OS user (postgres, pgserver, nobody) to run "
        "PostgreSQL, which refuses root: create one (`useradd --system postgres`) "
        "or run as a non-root user"
    )


def persistent_data_dir(name: str) -> Path:
    """A data directory for ``EmbeddedPostgres(data_dir=...)`` that is the same on every run and
    that the server's OS user can reach: ``$XDG_DATA_HOME/syncer/<name>`` (default
    ``~/.local/share/syncer/<name>``) when the server runs as this user, ``/var/lib/syncer/<name>``
    as root (whose home folder the server's user cannot enter). ``start()`` creates it."""
    if server_user() is not None:
        return Path("/var/lib/syncer") / name
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "syncer" / name


# Given pairs "-x PATH", prints the first PATH that fails its test and exits 1.
_PROBE = 'while [ "$#" -gt 1 ]; do test "$1" "$2" || { printf %s "$2"; exit 1; }; shift 2; done'
_ACCESS = {"-r": os.R_OK, "-w": os.W_OK, "-x": os.X_OK}


def _credentials(user: pwd.struct_passwd | None) -> dict[str, object]:
    """Popen keywords to run as the server's user: the same for the probe and the server."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def first_unusable(
    user: pwd.struct_passwd | None, checks: Sequence[tuple[str, Path]]
) -> Path | None:
    """The first path ``user`` cannot use as asked (``-r``, ``-w``, ``-x`` as in ``test``), or None.

    As another user, a shell started with the server's own credentials runs the tests, so every
    folder on the way, ownership, group and ACLs count exactly as they will for the server.
    """
    if user is None:
        for flag, path in checks:
            if not os.access(path, _ACCESS[flag]):
                return path
        return None
    args = [str(x) for flag, path in checks for x in (flag, path)]
    try:
        done = subprocess.run(  # type: ignore[call-overload]
            ["/bin/sh", "-c", _PROBE, "probe", *args],
            capture_output=True,
            cwd="/",
            timeout=30,
            **_credentials(user),
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise EmbeddedServerError(
            f"cannot run /bin/sh as OS user {user.pw_name} to check what it can reach: {e}"
        ) from e
    if done.returncode == 0:
        return None
    if done.returncode == 1 and done.stdout:
        return Path(os.fsdecode(done.stdout))
    raise EmbeddedServerError(
        f"cannot run /bin/sh as OS user {user.pw_name} to check what it can reach "
        f"(exit {done.returncode}): {_last_line(done.stderr)}"
    )


def _binary_checks(b: Binaries) -> list[tuple[str, Path]]:
    checks = [("-x", b.bin_dir / "initdb"), ("-x", b.bin_dir / "postgres")]
    if b.source == "pgserver":
        checks += [("-x", src) for src, _ in _pgserver_parts(b.bin_dir)]
        checks.append(("-r", b.bin_dir.parent / "share" / "postgresql" / "postgres.bki"))
    return checks


def _missing(path: Path) -> bool:
    """Absent (not merely unreachable: a folder we may not enter says nothing about it)."""
    try:
        path.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


# -- the pgserver wheel's install, copied where the server's user can reach it -----------------


def _pgserver_parts(bin_dir: Path) -> list[tuple[Path, Path]]:
    """(source, path inside the copy) of what the wheel's server needs at run time.

    The layout is kept: PostgreSQL finds ``share`` and ``lib`` relative to its own executable,
    and the wheel's binaries find their shared libraries through RPATH
    ``$ORIGIN/../../../pgserver.libs`` (a sibling of the ``pgserver`` package).
    """
    pginstall = bin_dir.parent
    parts = [(pginstall / d, Path("pgserver", "pginstall", d)) for d in ("bin", "lib", "share")]
    libs = pginstall.parent.parent / "pgserver.libs"
    if libs.is_dir():
        parts.append((libs, Path("pgserver.libs")))
    return parts


def _manifest(parts: Sequence[tuple[Path, Path]]) -> tuple[str, dict[str, int]]:
    """A hash of the contents (names, modes, bytes) and every file's size, by relative path."""
    digest = hashlib.sha256()
    sizes: dict[str, int] = {}
    for src, rel in parts:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                relpath = str(rel / path.relative_to(src))
                st = path.lstat()
                digest.update(f"{relpath}\0{st.st_mode & 0o111}\0".encode())
                if stat.S_ISLNK(st.st_mode):
                    digest.update(os.readlink(path).encode())
                else:
                    digest.update(path.read_bytes())
                    sizes[relpath] = st.st_size
    return digest.hexdigest(), sizes


def _complete(root: Path, sizes: dict[str, int]) -> bool:
    try:
        st = root.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return False
        return all((root / rel).stat().st_size == size for rel, size in sizes.items())
    except OSError:
        return False


def _open_up(root: Path) -> None:
    """Folders 0755, files 0755 or 0644: whatever umask the venv was installed under."""
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(Path(dirpath, name), 0o755)
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                os.chmod(path, 0o755 if path.stat().st_mode & 0o100 else 0o644)


def pgserver_cache_base() -> Path:
    """Where :func:`copy_pgserver_install` puts its copies: ``SYNCER_PG_CACHE`` if set, else
    ``/var/cache/syncer``, else ``/var/tmp/syncer-<uid>`` — the first that is a folder owned by
    this user that nobody else may write to (only then is running what is inside it safe)."""
    env = os.environ.get("SYNCER_PG_CACHE")
    candidates = (
        [Path(env)] if env else [Path("/var/cache/syncer"), Path(f"/var/tmp/syncer-{os.geteuid()}")]
    )
    for base in candidates:
        try:
            if not base.exists():
                base.mkdir(parents=True)
                os.chmod(base, 0o755)
            st = base.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022:
            return base
    raise EmbeddedServerError(
        f"no safe folder to copy the pgserver binaries into ({', '.join(map(str, candidates))}): "
        "set SYNCER_PG_CACHE to a folder you own that others may enter but not write to"
    )


def copy_pgserver_install(bin_dir: Path, base: Path) -> Path:
    """Copy the pgserver wheel's install under ``base`` once per content; return the copy's bin.

    The copy is ``base/pgserver-<version>-<content hash>``: made in a temporary sibling and
    renamed into place, so concurrent callers share one complete copy; a damaged one (say, a
    cleaner took files out of it) is replaced.
    """
    parts = _pgserver_parts(bin_dir)
    digest, sizes = _manifest(parts)
    site = bin_dir.parent.parent.parent  # where the wheel was installed, beside its dist-info
    found = importlib.metadata.distributions(name="pgserver", path=[str(site)])
    version = next((d.version for d in found), "unknown")
    final = base / f"pgserver-{version}-{digest[:16]}"
    copied_bin = final / "pgserver" / "pginstall" / "bin"
    if _complete(final, sizes):
        return copied_bin
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=base))
    try:
        for src, rel in parts:
            shutil.copytree(src, tmp / rel, symlinks=True)
        _open_up(tmp)
        for _ in range(3):
            try:
                os.rename(tmp, final)  # atomic; fails if another caller's copy is there
                break
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            if _complete(final, sizes):
                break
            damaged = base / f".damaged-{uuid.uuid4().hex}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(final, damaged)  # only one caller succeeds; the others retry
            shutil.rmtree(damaged, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not _complete(final, sizes):
        raise EmbeddedServerError(f"could not copy the pgserver binaries into {final}")
    log.info(
        "pgserver binaries copied where the server's user can reach them", extra={"to": str(final)}
    )
    return copied_bin


# -- the server -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _last_line(output: bytes) -> str:
    lines = output.decode(errors="replace").strip().splitlines()
    return lines[-1].strip() if lines else "(no output)"


class _PortInUse(Exception):
    pass


class EmbeddedPostgres:
    """``with EmbeddedPostgres() as pg: pg.dsn`` — a superuser DSN on 127.0.0.1.

    The data directory is a temporary one (removed on exit) unless ``data_dir`` is given, in
    which case it is kept and reused (see :func:`persistent_data_dir` for one the server's user
    can reach). ``durable=False`` turns fsync off: for tests only. ``port`` defaults to a free
    one. ``settings`` are more server settings (e.g. ``{"shared_preload_libraries":
    "pg_stat_statements"}`` for profiling). ``start()`` raises :class:`EmbeddedServerError`
    (one line: the cause, the way out) and leaves no process behind.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        durable: bool = True,
        binaries: Binaries | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.binaries = binaries or find_binaries()
        self.settings = dict(settings or {})  # more server settings (-c name=value)
        self._keep = data_dir is not None
        self._root = Path(data_dir).absolute() if data_dir is not None else None
        self._port_given = port is not None
        self.port = port or _free_port()
        self.durable = durable
        self._proc: subprocess.Popen[bytes] | None = None
        self._user = server_user()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def root(self) -> Path:
        """The folder holding ``data/`` and ``postgres.log``."""
        if self._root is None:
            raise RuntimeError("the temporary data directory exists once start() has run")
        return self._root

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def _as_whom(self) -> str:
        return f"OS user {self._user.pw_name}" if self._user else "this user"

    def _popen_kwargs(self) -> dict[str, object]:
        # Its own process group: a Ctrl-C at the terminal reaches the program that started the
        # server (which then stops its own work before it stops the server), not the server.
        return {"preexec_fn": _die_with_parent, "process_group": 0, **_credentials(self._user)}

    def start(self) -> EmbeddedPostgres:
        try:
            self._reach_binaries()
            self._prepare_root()
            if not (self.data / "PG_VERSION").exists():
                self._initdb()
            self._launch()
        except BaseException:
            self._stop_process()
            if not self._keep and self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None
            raise
        log.info(
            "embedded PostgreSQL started", extra={"port": self.port, "source": self.binaries.source}
        )
        return self

    def _reach_binaries(self) -> None:
        """Binaries the server's user can run, the wheel's copied where it can if need be."""
        b = self.binaries
        for name in ("initdb", "postgres"):
            if _missing(b.bin_dir / name):
                raise EmbeddedServerError(
                    f"no {name} in {b.bin_dir} ({b.source} binaries): {GET_BINARIES}"
                )
        unusable = first_unusable(self._user, _binary_checks(b))
        if unusable is not None and b.source == "pgserver" and self._user is not None:
            try:
                copied = copy_pgserver_install(b.bin_dir, pgserver_cache_base())
            except OSError as e:
                raise EmbeddedServerError(
                    f"OS user {self._user.pw_name} cannot reach {unusable}, and copying the "
                    f"pgserver binaries where it can failed: {e}; set SYNCER_PG_CACHE to a "
                    "folder you own that others may enter but not write to"
                ) from e
            b = self.binaries = Binaries(copied, "pgserver", copied_from=b.bin_dir)
            unusable = first_unusable(self._user, _binary_checks(b))
        if unusable is None:
            return
        if self._user is None:
            raise EmbeddedServerError(
                f"cannot run {unusable} ({b.source} binaries): permission denied; {GET_BINARIES}"
            )
        raise EmbeddedServerError(
            f"PostgreSQL runs as OS user {self._user.pw_name} (it refuses root), which cannot "
            f"reach {unusable} ({b.source} binaries; a folder on the way is private): point "
            "SYNCER_PG_BIN at binaries that user can reach, or run as a non-root user"
        )

    def _prepare_root(self) -> None:
        """The data directory's folder, owned by the server's user, and reachable by it."""
        if self._root is None:
            parent = Path(tempfile.gettempdir())
            if first_unusable(self._user, [("-x", parent)]) is not None:
                parent = Path("/tmp")  # TMPDIR is private: the server's user could not enter it
            self._root = Path(tempfile.mkdtemp(prefix="syncer-pg-", dir=parent))
        root = self._root
        existing = root.parent  # root itself is handed to the server's user below
        while _missing(existing):  # nothing is created where the server could not reach it
            existing = existing.parent
        if first_unusable(self._user, [("-x", existing)]) is None:
            try:
                self._make_dirs(root)
                if self._user is not None:
                    os.chown(root, self._user.pw_uid, self._user.pw_gid)
            except OSError as e:
                raise EmbeddedServerError(
                    f"cannot create the data directory {root}: {e.strerror}; "
                    "choose a data directory this user may create"
                ) from e
            checks = [("-x", root), ("-w", root)]
            if first_unusable(self._user, checks) is None:
                return
        raise EmbeddedServerError(
            f"PostgreSQL runs as {self._as_whom}, which cannot reach the data directory "
            f"{root} (a folder on the way is private): choose a data directory it can reach, "
            "outside private folders (e.g. under /var/lib or /tmp)"
        )

    def _make_dirs(self, path: Path) -> None:
        """``mkdir -p``; as root, the folders made here are 0755 so the server's user can enter
        them whatever the umask (folders that already exist are left as they are)."""
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for p in reversed(missing):
            p.mkdir(exist_ok=True)
            if self._user is not None:
                os.chmod(p, 0o755)

    def _initdb(self) -> None:
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
        try:
            done = subprocess.run(cmd, capture_output=True, cwd=self.root, **self._popen_kwargs())  # type: ignore[call-overload]
        except OSError as e:
            raise EmbeddedServerError(
                f"cannot run {cmd[0]} as {self._as_whom}: {e.strerror}; {GET_BINARIES}"
            ) from e
        if done.returncode == 0:
            return
        tail = _last_line(done.stderr)
        way_out = (
            f"remove {self.data} (it holds no PostgreSQL cluster) or choose another data directory"
            if "exists but is not empty" in tail
            else "fix what it names, or choose other binaries (SYNCER_PG_BIN, SYNCER_PG_BINARIES)"
        )
        raise EmbeddedServerError(
            f"initdb failed ({self.binaries.source} binaries in {self.binaries.bin_dir}, "
            f"as {self._as_whom}): {tail} — {way_out}"
        )

    def _launch(self) -> None:
        for attempt in range(3):
            try:
                self._launch_once()
                return
            except _PortInUse:
                if self._port_given or attempt == 2:
                    raise EmbeddedServerError(
                        f"port {self.port} on 127.0.0.1 is already in use: stop what listens "
                        "there or choose another port"
                    ) from None
                self.port = _free_port()  # taken since we picked it: pick another

    def _launch_once(self) -> None:
        args = [
            self.binaries["postgres"],
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            "",  # TCP only: a Unix socket's path (107 bytes at most) may not fit a deep folder
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
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        logpath = self.root / "postgres.log"
        with open(logpath, "ab") as logfile:
            offset = logfile.tell()
            try:
                self._proc = subprocess.Popen(  # type: ignore[call-overload]
                    args,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    **self._popen_kwargs(),
                )
            except OSError as e:
                raise EmbeddedServerError(
                    f"cannot run {args[0]} as {self._as_whom}: {e.strerror}; {GET_BINARIES}"
                ) from e
        self._wait_ready(offset)

    def _wait_ready(self, log_offset: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                self._proc = None
                raise self._start_failure(log_offset)
            # postmaster.pid's 8th line is the server's status ("ready" once it accepts
            # connections) and its first the server's pid: a file left by a server that was
            # killed (SIGKILL, a crash) says "ready" too, until this one replaces it
            with contextlib.suppress(OSError):
                lines = (self.data / "postmaster.pid").read_text().splitlines()
                if (
                    len(lines) >= 8
                    and lines[0].strip() == str(self._proc.pid)
                    and lines[7].strip() == "ready"
                ):
                    return
            time.sleep(0.05)
        raise EmbeddedServerError(
            f"embedded PostgreSQL not ready after {timeout:.0f}s: {self.log_tail(log_offset)}"
        )

    def _start_failure(self, log_offset: int) -> Exception:
        text = self._log_since(log_offset)
        if "Address already in use" in text:
            return _PortInUse()
        if 'lock file "postmaster.pid" already exists' in text:
            return EmbeddedServerError(
                f"the data directory {self.data} is in use by another PostgreSQL: stop that "
                "server (its pid is the first line of postmaster.pid) or use another data directory"
            )
        where = f" (log: {self.root / 'postgres.log'})" if self._keep else ""
        return EmbeddedServerError(
            f"embedded PostgreSQL ({self.binaries.source} binaries, as {self._as_whom}) exited "
            f"at start-up: {self.log_tail(log_offset)}{where}"
        )

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.root / "postgres.log", "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, offset: int = 0) -> str:
        """The log's most telling line: the last FATAL or PANIC, else the last line."""
        lines = self._log_since(offset).strip().splitlines()
        if not lines:
            return "(empty log)"
        telling = [ln for ln in lines if "FATAL:" in ln or "PANIC:" in ln]
        return (telling or lines)[-1].strip()

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        self._stop_process()
        if not self._keep and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
