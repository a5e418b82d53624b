"""Control groups for sandbox slots: memory, process and CPU limits and accounting, v1 and v2.

Each slot of the pool owns two cgroups (each one per controller under v1) for as long as the pool
lives: bubblewrap's launcher joins a free one before bubblewrap starts, so the sandbox's cgroup
namespace is rooted there (inside, ``/proc/self/cgroup`` reads ``/``), and once the sandbox's init waits
bubblewrap itself is moved out to the pool's ``launchers`` cgroup, leaving init alone inside; everything
the run starts is born inside. Per run only the limits are rewritten and counters read:

- memory: the limit is the usage at the start of the run plus the run's allowance (the compiled
  program a compile step left in the work directory is not the run's), and the peak is measured
  from a reset taken at the start (v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``); an OOM
  kill is read from ``memory.oom_control`` / ``memory.events``;
- processes: ``pids.max`` (threads count too), and whether a fork was refused (``pids.events``);
- CPU: usage in nanoseconds (v1 ``cpuacct.usage``, v2 ``cpu.stat``), and a CFS quota of ``cpus``
  cores so that one run cannot take the whole machine.

Cgroups live under ``<hierarchy>/studyhall-sandbox/<pool>/slot-<n>``, never inside a cgroup some
other program manages.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

V1_CONTROLLERS = ("memory", "pids", "cpuacct")
V1_OPTIONAL = ("cpu",)
V2_CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000


class CgroupError(RuntimeError):
    """The cgroups the sandbox needs are missing or cannot be written."""


@dataclass(frozen=True)
class Mark:
    """Counters at the start of a run, to measure the run against."""

    memory_bytes: int
    cpu_ns: int
    oom_kills: int
    pids_refusals: int
    peak_fd: int | None = None  # v2: the memory.peak descriptor whose reading started at the run


@dataclass(frozen=True)
class Usage:
    cpu_ns: int
    memory_peak_bytes: int | None  # None when the kernel cannot tell (v2 without memory.peak)
    oom_killed: bool
    process_limit_hit: bool


class SlotCgroup(Protocol):
    def attach(self, pid: int) -> None: ...

    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files a process writes its pid to, to join this cgroup (one per hierarchy)."""
        ...

    def prepare(self, memory_bytes: int, processes: int) -> Mark: ...

    def cpu_ns(self) -> int: ...

    def measure(self, mark: Mark) -> Usage: ...

    def procs(self) -> list[int]: ...

    def kill(self) -> None: ...

    def remove(self) -> None: ...


class CgroupTree(Protocol):
    version: int

    def slot(self, name: str) -> SlotCgroup: ...

    def remove(self) -> None: ...


# --- discovery -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hierarchies:
    v1: dict[str, Path]  # controller -> mount point
    v2: Path | None


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape")


def discover(root: Path = Path("/sys/fs/cgroup"), mountinfo: Path = Path("/proc/self/mountinfo")) -> Hierarchies:
    """The cgroup hierarchies mounted under ``root``: v1 controllers by mount point, and the v2 mount."""
    v1: dict[str, Path] = {}
    v2: Path | None = None
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return Hierarchies({}, None)
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        mount_point = Path(_unescape(fields[4]))
        if mount_point != root and root not in mount_point.parents:
            continue
        fstype, options = rest[0], rest[2].split(",")
        if fstype == "cgroup2":
            v2 = mount_point
        elif fstype == "cgroup":
            for option in options:
                if option in V1_CONTROLLERS + V1_OPTIONAL:
                    v1.setdefault(option, mount_point)
    return Hierarchies(v1, v2)


def open_tree(root: Path, parent: str, cpus: float) -> CgroupTree:
    """The cgroup tree of one pool: v1 if it has every controller needed, else v2; :class:`CgroupError`
    naming what is missing otherwise."""
    found = discover(root)
    if all(c in found.v1 for c in V1_CONTROLLERS):
        return V1Tree(found.v1, parent, cpus)
    if found.v2 is not None:
        available = _read(found.v2 / "cgroup.controllers").split()
        missing = [c for c in V2_CONTROLLERS if c not in available]
        if not missing:
            return V2Tree(found.v2, parent, cpus)
        raise CgroupError(f"cgroup v2 at {found.v2} lacks the controllers {', '.join(missing)}")
    missing = [c for c in V1_CONTROLLERS if c not in found.v1]
    if found.v1:
        raise CgroupError(f"cgroup v1 under {root} lacks the controllers {', '.join(missing)}")
    raise CgroupError(f"no cgroup hierarchy is mounted under {root}")


# --- file helpers ----------------------------------------------------------------------------------


def _read(path: Path) -> str:
    with open(path) as fh:
        return fh.read()


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _keyed(path: Path, key: str) -> int:
    """The number after ``key`` in a flat keyed file (``oom_kill 3``); 0 when absent."""
    try:
        text = _read(path)
    except FileNotFoundError:
        return 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def _pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in _read(path / "cgroup.procs").split()]
    except FileNotFoundError:
        return []


def _kill_each(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _rmdir_tree(path: Path) -> None:
    """Remove a cgroup directory and its child cgroups (deepest first); missing ones are fine."""
    if not path.is_dir():
        return
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(FileNotFoundError):
            child.rmdir()
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()


def remove_abandoned(path: Path) -> None:
    """Kill whatever still runs in a cgroup tree nobody owns any more, then remove it.

    Processes die asynchronously after SIGKILL and a cgroup with members cannot be removed, so this
    retries for a moment; a tree that still will not go is left (and logged) rather than fatal.
    """
    deadline = time.monotonic() + 5
    while True:
        for group in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            _kill_each(_pids(group))
        try:
            _rmdir_tree(path)
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                log.warning("could not remove the abandoned cgroup %s: %s", path, exc)
                return
            time.sleep(0.01)


# --- v1 --------------------------------------------------------------------------------------------


class V1Slot:
    def __init__(self, paths: dict[str, Path], cpus: float) -> None:
        self.paths = paths
        self._dirs = list(dict.fromkeys(paths.values()))  # co-mounted controllers share a directory
        for path in self._dirs:
            path.mkdir(parents=True, exist_ok=True)
        memsw = paths["memory"] / "memory.memsw.limit_in_bytes"
        self._memsw = memsw if memsw.exists() else None
        if "cpu" in paths:
            _write(paths["cpu"] / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(paths["cpu"] / "cpu.cfs_quota_us", str(int(CFS_PERIOD_US * cpus)))

    def attach(self, pid: int) -> None:
        for path in self._dirs:
            _write(path / "cgroup.procs", str(pid))

    def procs_files(self) -> list[Path]:
        return [path / "cgroup.procs" for path in self._dirs]

    def _set_memory_limit(self, limit: int) -> None:
        mem = self.paths["memory"] / "memory.limit_in_bytes"
        if self._memsw is None:
            _write(mem, str(limit))
            return
        # memsw (memory + swap) may never be below the memory limit: lower memory first, raise memsw first.
        try:
            _write(mem, str(limit))
            _write(self._memsw, str(limit))
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            _write(self._memsw, str(limit))
            _write(mem, str(limit))

    def prepare(self, memory_bytes: int, processes: int) -> Mark:
        memory = self.paths["memory"]
        usage = int(_read(memory / "memory.usage_in_bytes"))
        self._set_memory_limit(usage + memory_bytes)
        _write(memory / "memory.max_usage_in_bytes", "0")  # resets the peak to the current usage
        _write(self.paths["pids"] / "pids.max", str(processes))
        return Mark(
            memory_bytes=usage,
            cpu_ns=self.cpu_ns(),
            oom_kills=_keyed(memory / "memory.oom_control", "oom_kill"),
            pids_refusals=_keyed(self.paths["pids"] / "pids.events", "max"),
        )

    def cpu_ns(self) -> int:
        return int(_read(self.paths["cpuacct"] / "cpuacct.usage"))

    def measure(self, mark: Mark) -> Usage:
        memory = self.paths["memory"]
        peak = int(_read(memory / "memory.max_usage_in_bytes"))
        return Usage(
            cpu_ns=self.cpu_ns() - mark.cpu_ns,
            memory_peak_bytes=max(0, peak - mark.memory_bytes),
            oom_killed=_keyed(memory / "memory.oom_control", "oom_kill") > mark.oom_kills,
            process_limit_hit=_keyed(self.paths["pids"] / "pids.events", "max") > mark.pids_refusals,
        )

    def procs(self) -> list[int]:
        return sorted({pid for path in self._dirs for pid in _pids(path)})

    def kill(self) -> None:
        _kill_each(self.procs())

    def remove(self) -> None:
        for path in self._dirs:
            _rmdir_tree(path)


class V1Tree:
    version = 1

    def __init__(self, mounts: dict[str, Path], parent: str, cpus: float) -> None:
        self.mounts = mounts
        self.parent = parent.strip("/")
        self.cpus = cpus
        for controller in mounts:
            _writable(mounts[controller] / self.parent)

    def slot(self, name: str) -> V1Slot:
        return V1Slot({c: m / self.parent / name for c, m in self.mounts.items()}, self.cpus)

    def remove(self) -> None:
        for mount in dict.fromkeys(self.mounts.values()):
            _rmdir_tree(mount / self.parent)


def _writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CgroupError(f"cannot create the cgroup {path}: {exc.strerror}") from None


# --- v2 --------------------------------------------------------------------------------------------


class V2Slot:
    def __init__(self, path: Path, cpus: float) -> None:
        self.path = path
        path.mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            _write(path / "memory.swap.max", "0")
        _write(path / "cpu.max", f"{int(CFS_PERIOD_US * cpus)} {CFS_PERIOD_US}")
        self._has_peak = (path / "memory.peak").exists()

    def attach(self, pid: int) -> None:
        _write(self.path / "cgroup.procs", str(pid))

    def procs_files(self) -> list[Path]:
        return [self.path / "cgroup.procs"]

    def prepare(self, memory_bytes: int, processes: int) -> Mark:
        usage = int(_read(self.path / "memory.current"))
        _write(self.path / "memory.max", str(usage + memory_bytes))
        _write(self.path / "pids.max", str(processes))
        peak_fd = None
        if self._has_peak:
            peak_fd = os.open(self.path / "memory.peak", os.O_RDWR)
            try:
                os.write(peak_fd, b"reset")  # from Linux 6.12 on: this descriptor reads the peak since now
            except OSError:
                os.close(peak_fd)
                peak_fd = None
        return Mark(
            memory_bytes=usage,
            cpu_ns=self.cpu_ns(),
            oom_kills=_keyed(self.path / "memory.events", "oom_kill"),
            pids_refusals=_keyed(self.path / "pids.events", "max"),
            peak_fd=peak_fd,
        )

    def cpu_ns(self) -> int:
        return _keyed(self.path / "cpu.stat", "usage_usec") * 1000

    def measure(self, mark: Mark) -> Usage:
        peak: int | None = None
        if mark.peak_fd is not None:
            try:
                peak = max(0, int(os.pread(mark.peak_fd, 64, 0)) - mark.memory_bytes)
            finally:
                os.close(mark.peak_fd)
        return Usage(
            cpu_ns=self.cpu_ns() - mark.cpu_ns,
            memory_peak_bytes=peak,
            oom_killed=_keyed(self.path / "memory.events", "oom_kill") > mark.oom_kills,
            process_limit_hit=_keyed(self.path / "pids.events", "max") > mark.pids_refusals,
        )

    def procs(self) -> list[int]:
        return _pids(self.path)

    def kill(self) -> None:
        try:
            _write(self.path / "cgroup.kill", "1")
        except FileNotFoundError:  # before Linux 5.14
            _kill_each(self.procs())

    def remove(self) -> None:
        _rmdir_tree(self.path)


class V2Tree:
    version = 2

    def __init__(self, mount: Path, parent: str, cpus: float) -> None:
        self.mount = mount
        self.path = mount / parent.strip("/")
        self.cpus = cpus
        # Every level from the mount down to the slots must hand the controllers to its children.
        level = mount
        for part in Path(parent.strip("/")).parts:
            _enable_controllers(level)
            level = level / part
            _writable(level)
        _enable_controllers(level)

    def slot(self, name: str) -> V2Slot:
        return V2Slot(self.path / name, self.cpus)

    def remove(self) -> None:
        _rmdir_tree(self.path)


def _enable_controllers(path: Path) -> None:
    enabled = _read(path / "cgroup.subtree_control").split()
    wanted = [c for c in V2_CONTROLLERS if c not in enabled]
    if wanted:
        try:
            _write(path / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        except OSError as exc:
            raise CgroupError(f"cannot enable {', '.join(wanted)} in {path}: {exc.strerror}") from None


def parent_dirs(tree: CgroupTree) -> list[Path]:
    """The directories a tree's cgroups live in, one per hierarchy."""
    if isinstance(tree, V1Tree):
        return [mount / tree.parent for mount in dict.fromkeys(tree.mounts.values())]
    if isinstance(tree, V2Tree):
        return [tree.path]
    return []
