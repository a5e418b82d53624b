"""What the sandbox needs from the machine, checked and prepared once: root, bubblewrap, user
namespaces, cgroups, the sandbox user, the init helper, and the slots' work-directory mounts.

:func:`probe` answers "can this machine run untrusted code safely?" without starting anything, so the
server can say at start-up (and in ``/readyz``) why the sandbox is unavailable. Everything else here
is called by the pool when it opens: the system user the sandboxes run as is created if missing
(like the embedded Postgres's ``studyhall-pg``), the init helper (``init.c``) is compiled once per
machine into the runtime directory, and each slot gets a size-capped tmpfs of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import logging
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sandbox import cgroups

log = logging.getLogger(__name__)

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MNT_DETACH = 0x2


class HostError(RuntimeError):
    """The machine cannot run sandboxes; the message says why and what to do."""


@dataclass(frozen=True)
class SandboxUser:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Probe:
    """The result of :func:`probe`: ``reason`` is None when the machine can run sandboxes."""

    reason: str | None
    bwrap: str | None = None
    cgroup_version: int | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def find_bwrap(configured: str) -> str | None:
    found = shutil.which(configured)
    return os.path.realpath(found) if found else None


def _userns_reason() -> str | None:
    checks = {
        "/proc/sys/user/max_user_namespaces": ("0", "user.max_user_namespaces is 0"),
        "/proc/sys/kernel/unprivileged_userns_clone": ("0", "kernel.unprivileged_userns_clone is 0"),
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": (
            "1",
            "kernel.apparmor_restrict_unprivileged_userns is 1 (AppArmor keeps bwrap from creating user namespaces)",
        ),
    }
    for path, (bad, text) in checks.items():
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value == bad:
            return f"unprivileged user namespaces are disabled: {text}"
    return None


def probe(bwrap: str, cgroup_root: Path) -> Probe:
    """Check, without starting anything, whether sandboxes can run here (see the module docstring)."""
    if os.geteuid() != 0:
        return Probe(
            "the sandbox needs to run as root: it creates its own unprivileged user, cgroups and work-directory "
            f"mounts (this process runs as uid {os.geteuid()})"
        )
    path = find_bwrap(bwrap)
    if path is None:
        return Probe(f"bubblewrap ({bwrap!r}) is not installed: apt-get install -y bubblewrap")
    reason = _userns_reason()
    if reason is not None:
        return Probe(reason, bwrap=path)
    found = cgroups.discover(cgroup_root)
    v1_ok = all(c in found.v1 for c in cgroups.V1_CONTROLLERS)
    if not v1_ok and found.v2 is None:
        missing = [c for c in cgroups.V1_CONTROLLERS if c not in found.v1]
        where = f"cgroup v1 lacks {', '.join(missing)}" if found.v1 else "no cgroup hierarchy is mounted"
        return Probe(f"cgroups are missing under {cgroup_root}: {where}", bwrap=path)
    if not v1_ok and found.v2 is not None:
        try:
            available = (found.v2 / "cgroup.controllers").read_text().split()
        except OSError as exc:
            return Probe(f"cannot read {found.v2}/cgroup.controllers: {exc.strerror}", bwrap=path)
        missing = [c for c in cgroups.V2_CONTROLLERS if c not in available]
        if missing:
            return Probe(f"cgroup v2 at {found.v2} lacks the controllers {', '.join(missing)}", bwrap=path)
    return Probe(None, bwrap=path, cgroup_version=1 if v1_ok else 2)


# --- the sandbox user ------------------------------------------------------------------------------


def ensure_user(name: str) -> SandboxUser:
    """The unprivileged system user sandboxes run as, created (with its own group) if missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        nologin = next((p for p in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(p)), "/bin/false")
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", nologin,
             "--user-group", name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise HostError(f"could not create the sandbox user {name!r}: {result.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
        log.info("created the sandbox user %s (uid %d)", name, entry.pw_uid)
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise HostError(f"the sandbox user {name!r} must not be root or in group root")
    return SandboxUser(name, entry.pw_uid, entry.pw_gid)


# --- the init helper -------------------------------------------------------------------------------


def init_source() -> bytes:
    return resources.files("sandbox").joinpath("init.c").read_bytes()


def build_init(runtime_dir: Path) -> Path:
    """Compile ``init.c`` into ``runtime_dir/init-<hash>`` unless that binary exists already.

    Static when the C library allows it (no dynamic loader to run in every sandbox), dynamic otherwise.
    The binary is root-owned and world-executable: the sandbox user must be able to run it.
    """
    source = init_source()
    target = runtime_dir / f"init-{hashlib.sha256(source).hexdigest()[:16]}"
    if target.exists():
        return target
    compiler = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if compiler is None:
        raise HostError("no C compiler to build the sandbox's init helper: apt-get install -y gcc")
    with tempfile.TemporaryDirectory(dir=runtime_dir) as tmp:
        src = Path(tmp) / "init.c"
        src.write_bytes(source)
        out = Path(tmp) / "init"
        errors = ""
        for extra in (["-static"], []):
            result = subprocess.run(
                [compiler, "-O2", "-Wall", *extra, "-o", str(out), str(src)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                break
            errors = result.stderr
        else:
            raise HostError(f"could not compile the sandbox's init helper: {errors.strip()}")
        out.chmod(0o755)
        out.replace(target)  # atomic: another process building at the same time wins or loses whole
    return target


# --- runtime directory and slot mounts -------------------------------------------------------------


def prepare_runtime_dir(path: Path) -> None:
    """The directory holding the init helper and every pool's slots: root-owned, traversable only."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 0, 0)
    path.chmod(0o711)


_libc = ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(target: Path, size_bytes: int, inodes: int) -> None:
    """A tmpfs of ``size_bytes`` and ``inodes`` at ``target``: root-owned, traversable only, no devices or setuid."""
    target.mkdir(parents=True, exist_ok=True, mode=0o711)
    options = f"size={size_bytes},nr_inodes={inodes},mode=0711,uid=0,gid=0".encode()
    flags = _MS_NOSUID | _MS_NODEV
    if _libc.mount(b"tmpfs", bytes(target), b"tmpfs", flags, options) != 0:
        err = ctypes.get_errno()
        raise HostError(f"could not mount a tmpfs on {target}: {os.strerror(err)}")


def install_init(init: Path, directory: Path) -> Path:
    """A copy of the init helper on a small tmpfs of its own at ``directory``, for the sandboxes to run.

    Bound into a sandbox from there, ``/proc/self/mountinfo`` shows it as ``/init`` on a tmpfs, where a
    bind of the runtime directory's copy would show that host path.
    """
    data = init.read_bytes()
    mount_tmpfs(directory, len(data) + 64 * 1024, 16)
    target = directory / "init"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return target


def unmount(target: Path) -> None:
    if _libc.umount2(bytes(target), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            log.warning("could not unmount %s: %s", target, os.strerror(err))


def process_start(pid: int) -> str | None:
    """The start time of a process (field 22 of /proc/<pid>/stat), to tell it from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


_pools = itertools.count()


def pool_name() -> str:
    """A new pool's directory name: this process's pid and start time (so that what a dead process left
    is recognisable) and a number (a process may hold several pools, as tests do)."""
    return f"{os.getpid()}-{process_start(os.getpid())}-{next(_pools)}"


def pool_is_alive(name: str) -> bool:
    pid, _, rest = name.partition("-")
    return pid.isdigit() and process_start(int(pid)) == rest.partition("-")[0]


def _kill_strays(runtime_dir: Path, uid: int) -> None:
    """Kill the sandbox user's processes that belong to a dead pool (found by the slot paths bubblewrap
    was started with): a sandbox still being set up when its server died has no parent-death signal yet."""
    prefix = f"{runtime_dir}/".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        pools = {a[len(prefix) :].split(b"/")[0].decode(errors="replace") for a in argv if a.startswith(prefix)}
        pools.discard("")
        if any(not name.startswith("init-") and not pool_is_alive(name) for name in pools):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def remove_dead_pools(runtime_dir: Path, cgroup_parents: list[Path], user: SandboxUser) -> None:
    """Clean what pools of processes that died without closing left behind: processes, mounts, cgroups."""
    _kill_strays(runtime_dir, user.uid)
    with contextlib.suppress(FileNotFoundError):
        for pool in runtime_dir.iterdir():
            if pool.is_dir() and not pool.name.startswith("init-") and not pool_is_alive(pool.name):
                log.warning("removing the sandbox slots of a process that is gone: %s", pool)
                for slot in pool.iterdir():
                    unmount(slot)
                shutil.rmtree(pool, ignore_errors=True)
    for parent in cgroup_parents:
        with contextlib.suppress(FileNotFoundError):
            for pool in parent.iterdir():
                if pool.is_dir() and not pool_is_alive(pool.name):
                    cgroups.remove_abandoned(pool)
