"""How a sandbox is started and spoken to: bubblewrap's command line, and init's protocol.

:func:`bwrap_argv` is the one place that says what a sandbox contains (namespaces, mounts, the init
helper); :func:`go_message` and :func:`parse_report` are the two ends of init's protocol (``init.c``);
:func:`rlimits` are the per-process limits behind each run's cgroup limits.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sandbox.console import InputFeed
from sandbox.models import Limits

WORK = "/work"
_BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": WORK,
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "USER": "sandbox",
}


@dataclass(frozen=True)
class Phase:
    """One program to run in a slot's sandbox."""

    argv: Sequence[str]
    limits: Limits
    stdin: bytes = b""
    env: dict[str, str] = field(default_factory=dict)
    address_space_limit: bool = False
    # Called with ("stdout" | "stderr", bytes) as the program writes (within the output cap), on the
    # event loop: whoever wants to show output live (a workspace's Run) buffers and sends it.
    on_output: Callable[[str, bytes], None] | None = field(default=None, compare=False)
    # An interactive run's input (a console): stdin is then a pipe filled from this feed, and ``stdin`` unused.
    stdin_feed: InputFeed | None = field(default=None, compare=False)


def rlimits(phase: Phase) -> list[tuple[str, int, int]]:
    """The per-process rlimits behind the cgroup limits (the second line), as (resource, soft, hard)."""
    limits = phase.limits
    cpu_s = math.ceil(limits.cpu_ms / 1000) + 1  # the cgroup watchdog should act first
    memory = limits.memory_kb * 1024
    out = [
        ("CPU", cpu_s, cpu_s + 1),
        ("FSIZE", limits.file_size_kb * 1024, limits.file_size_kb * 1024),
        ("NOFILE", limits.open_files, limits.open_files),
        # Counted per sandbox (its own user namespace) like pids.max, but a fork is counted here before
        # the cgroup sees it, so racing forks would meet this limit first if it were as tight: keep it
        # well above, so that the cgroup, which records that it refused a fork, is what stops them.
        ("NPROC", 2 * limits.processes + 2, 2 * limits.processes + 2),
        ("STACK", min(memory, 64 * 1024 * 1024), min(memory, 64 * 1024 * 1024)),
        ("CORE", 0, 0),
        ("MEMLOCK", 0, 0),
        ("MSGQUEUE", 0, 0),
    ]
    if phase.address_space_limit:
        # Address space is not memory: leave room for reserved-but-untouched mappings, so that the
        # cgroup limit (which counts what is really used) decides, and this only stops runaway mappings.
        space = 2 * memory + 256 * 1024 * 1024
        out.append(("AS", space, space))
    return out


def go_message(phase: Phase) -> bytes:
    fields = [f"L{name} {soft} {hard}" for name, soft, hard in rlimits(phase)]
    fields += [f"E{k}={v}" for k, v in {**_BASE_ENV, **phase.env}.items()]
    fields.append(f"C{WORK}")
    fields += [f"A{arg}" for arg in phase.argv]
    return b"".join(f.encode() + b"\0" for f in fields)


Stop = Literal["reported", "wall", "cpu", "overflow"]


@dataclass(frozen=True)
class Report:
    """What init said about the program: its wait status (None if it never reported), wall time, peak RSS."""

    wait_status: int | None
    wall_ms: int
    maxrss_kb: int = 0
    start_error: str | None = None


def parse_report(raw: bytes, wall_s: float) -> Report:
    """Read init's ``X ...`` or ``F ...`` line (see init.c); ``wall_s`` is the server's own measure,
    used when init had nothing to say (the run was stopped from outside)."""
    fields = raw.decode(errors="replace").split()
    if len(fields) == 6 and fields[0] == "X":
        return Report(wait_status=int(fields[1]), wall_ms=round(int(fields[2]) / 1000), maxrss_kb=int(fields[5]))
    if fields and fields[0] == "F":
        err_no = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
        step = fields[2] if len(fields) > 2 else "start"
        return Report(wait_status=None, wall_ms=round(wall_s * 1000), start_error=f"{step}: {os.strerror(err_no)}")
    return Report(wait_status=None, wall_ms=round(wall_s * 1000))


def send_go(ctrl: socket.socket, phase: Phase) -> int | None:
    """Hand init the command, with the run's stdin as a memfd (a regular file: seekable, no pipe to feed),
    or for an interactive run (``stdin_feed``) as the read end of a pipe whose write end is returned."""
    writer: int | None = None
    if phase.stdin_feed is not None:
        stdin, writer = os.pipe2(os.O_CLOEXEC)
    else:
        stdin = os.memfd_create("stdin", os.MFD_CLOEXEC)
    try:
        if writer is None:
            view = memoryview(phase.stdin)
            while view:
                view = view[os.write(stdin, view) :]
            os.lseek(stdin, 0, os.SEEK_SET)
        ctrl.sendmsg([go_message(phase)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, stdin.to_bytes(4, "little"))])
    except BaseException:
        if writer is not None:
            os.close(writer)
        raise
    finally:
        os.close(stdin)
    return writer


def bwrap_argv(bwrap: str, slot_dir: Path, init: Path, shm_bytes: int) -> list[str]:
    """The bubblewrap command of a slot's sandboxes, without ``--seccomp FD`` and init's argument.

    The last element is init's path inside the sandbox; :meth:`Slot._spawn` inserts the seccomp
    descriptor before it and appends the control socket's number after it.
    """
    argv = [
        bwrap,
        "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--disable-userns", "--as-pid-1", "--die-with-parent", "--new-session",
        "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime"):
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        # /dev itself read-only (only its device nodes), shared memory in a size-capped tmpfs of its own.
        "--size", str(shm_bytes), "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--bind", str(slot_dir / "work"), WORK,
        "--bind", str(slot_dir / "tmp"), "/tmp",
        "--ro-bind", str(init), "/.init",
        "--remount-ro", "/",
        "--chdir", WORK,
        "/.init",
    ]  # fmt: skip
    return argv
