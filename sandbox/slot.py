"""One slot of the pool: a work-directory tmpfs, two cgroups, and a sandbox waiting for its next run.

A slot prepares its sandbox *before* a run is asked for ("warm"): bubblewrap, started as the sandbox
user from inside one of the slot's two cgroups (its launcher joins it), builds fresh namespaces (user,
PID, network, IPC, UTS, mount, and a cgroup namespace rooted at that cgroup, so that the program sees
no host cgroup path), mounts the read-only system directories and the slot's work directory, loads the
seccomp filter and starts the init helper (``init.c``) as process 1. Once init says it is ready,
bubblewrap itself is moved out to the pool's ``launchers`` cgroup, while init is idle, so that only
the sandbox's processes are counted and a run never waits for bubblewrap or for a cgroup move (which
can take ~10 ms: the kernel waits for an RCU grace period). A run then only writes its files, sets its cgroup's
limits and sends init the command; init forks and execs it. When a job has more steps (the run after a
compile, a judge's next test case), the next sandbox is prepared in the other cgroup while this one runs.

After the run everything the sandbox held dies with its PID namespace, the cgroup is checked empty,
the work directory is emptied (unless a compile step's output is kept for the run that follows) and a
new sandbox is prepared for the next run: no namespace, process or file outlives the run it was made for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.cgroups import Mark, SlotCgroup
from sandbox.console import pump
from sandbox.core import Outcome
from sandbox.host import SandboxUser
from sandbox.launch import Phase, Stop, parse_report, send_go
from sandbox.models import Limits, SourceFile

log = logging.getLogger(__name__)

_READY_TIMEOUT_S = 20.0
_DRAIN_TIMEOUT_S = 2.0
_EMPTY_TIMEOUT_S = 5.0
_CPU_CHECK_S = 0.1


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program in it)."""


class OutputCapture:
    """Reads one pipe into memory up to ``cap`` bytes; ``overflow`` is set when the program wrote more."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        cap: int,
        overflow: asyncio.Event,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> None:
        self.loop = loop
        self.on_chunk = on_chunk
        self.fd = fd
        self.cap = cap
        self.data = bytearray()
        self.overflowed = False
        self._overflow = overflow
        self.closed = asyncio.Event()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.stop()
            return
        room = self.cap - len(self.data)
        kept = chunk[:room]
        self.data += kept
        if self.on_chunk is not None and kept:
            try:
                self.on_chunk(kept)
            except Exception:
                log.exception("an output listener failed")
        if len(chunk) > room:
            self.overflowed = True
            self._overflow.set()
            self.stop()

    def stop(self) -> None:
        if not self.closed.is_set():
            self.loop.remove_reader(self.fd)
            self.closed.set()


@dataclass
class Sandbox:
    """A started bubblewrap whose init waits for a command."""

    proc: subprocess.Popen[bytes]
    init_pid: int
    ctrl: socket.socket
    stdout: int
    stderr: int
    cgroup: SlotCgroup | None = None  # the slot's cgroup it was started in, until given back

    def close_fds(self) -> None:
        self.ctrl.close()
        for fd in (self.stdout, self.stderr):
            with contextlib.suppress(OSError):
                os.close(fd)


class Slot:
    """One slot: see the module docstring. Not safe for two runs at once; the pool hands it out."""

    def __init__(
        self,
        index: int,
        directory: Path,
        cgroups: tuple[SlotCgroup, SlotCgroup],
        user: SandboxUser,
        bwrap_argv: list[str],
        seccomp: bytes,
        init: Path,
        launchers: SlotCgroup,
    ) -> None:
        self.index = index
        self.dir = directory
        self.work = directory / "work"
        self.tmp = directory / "tmp"
        # Two cgroups: the next sandbox waits in the one the current sandbox does not use, so that it
        # can be moved in while the current one still runs (a compile, a test case), off the run's path.
        self.cgroups = cgroups
        self._free = list(cgroups)
        self._launchers = launchers  # where bubblewrap waits once its sandbox is ready (not counted with it)
        self.user = user
        self._bwrap_argv = bwrap_argv
        self._seccomp = seccomp
        self._launcher = [str(init), "launch", str(user.uid), str(user.gid)]
        self.sandbox: Sandbox | None = None
        self._ahead: asyncio.Future[Sandbox] | None = None

    # --- preparing ----------------------------------------------------------------------------------

    def reset_files(self) -> None:
        """Empty the work and temporary directories (no sandbox process is alive to race with this).

        The directories themselves stay (a sandbox prepared ahead has them bind-mounted already); their
        owner and mode are put back in case the last program changed them.
        """
        for path, mode in ((self.work, 0o755), (self.tmp, 0o700)):
            if path.is_symlink() or (path.exists() and not path.is_dir()):
                path.unlink()
            if not path.exists():
                path.mkdir(mode=mode)
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            os.chown(path, self.user.uid, self.user.gid)
            path.chmod(mode)

    def write_files(self, files: Sequence[SourceFile]) -> None:
        for item in files:
            target = self.work / item.path
            parent = self.work
            for part in Path(item.path).parts[:-1]:
                parent = parent / part
                if not parent.exists():
                    parent.mkdir(mode=0o755)
                    os.chown(parent, self.user.uid, self.user.gid)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, item.content.encode())
                os.fchown(fd, self.user.uid, self.user.gid)
            finally:
                os.close(fd)

    def write_executable(self, name: str, data: bytes) -> None:
        fd = os.open(self.work / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
        try:
            os.write(fd, data)
            os.fchown(fd, self.user.uid, self.user.gid)
        finally:
            os.close(fd)

    def _spawn(self, cgroup: SlotCgroup) -> Sandbox:
        ctrl, child_ctrl = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        filter_r, filter_w = os.pipe2(os.O_CLOEXEC)
        try:
            os.write(filter_w, self._seccomp)  # a few hundred bytes: always fits the pipe
            os.close(filter_w)
            filter_w = -1
            joins = [arg for path in cgroup.procs_files() for arg in ("--cgroup", str(path))]
            argv = [
                *self._launcher,
                *joins,
                *self._bwrap_argv[:-1],
                "--seccomp",
                str(filter_r),
                self._bwrap_argv[-1],
                str(child_ctrl.fileno()),
            ]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                pass_fds=(child_ctrl.fileno(), filter_r),
                env={},
                cwd="/",
                umask=0o022,
            )  # no user= here: that would make Python fork instead of vfork; the launcher switches user
        except BaseException:
            ctrl.close()
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            child_ctrl.close()
            for fd in (out_w, err_w, filter_r, filter_w):
                if fd >= 0:
                    os.close(fd)
        return Sandbox(proc=proc, init_pid=0, ctrl=ctrl, stdout=out_r, stderr=err_r, cgroup=cgroup)

    async def warm(self) -> None:
        """Give the slot its next sandbox: the one prepared ahead if there is one, else a new one."""
        await self.take_ahead()
        if self.sandbox is None:
            self.adopt(await self.prepare())

    def prepare_ahead(self) -> None:
        """Start preparing the next sandbox now, while the current one runs; :meth:`warm` will take it."""
        if self._ahead is None:
            self._ahead = asyncio.ensure_future(self.prepare())

    async def take_ahead(self) -> None:
        """Adopt the sandbox prepared ahead, if any (if preparing it failed, the slot stays without one)."""
        if self._ahead is None:
            return
        try:
            # Shielded: a caller cancelled now must not abandon a half-started sandbox (close() ends it).
            sandbox = await asyncio.shield(self._ahead)
        except SandboxError as exc:
            log.warning("slot %d: a sandbox prepared ahead failed: %s", self.index, exc)
            self._ahead = None
            return
        self._ahead = None
        if self.sandbox is None:
            self.adopt(sandbox)
        else:
            await self.discard(sandbox)

    async def prepare(self) -> Sandbox:
        """Start a sandbox whose init waits in the slot's free cgroup: it may be prepared while the slot
        still runs something in the other one (the next test case, the run after a compile) without
        being counted with it or killed with it. :meth:`adopt` makes it the slot's next sandbox."""
        loop = asyncio.get_running_loop()
        if not self._free:
            raise SandboxError(f"slot {self.index} has no free cgroup for another sandbox")
        cgroup = self._free.pop()
        spawning = asyncio.ensure_future(asyncio.to_thread(self._spawn, cgroup))
        try:
            sandbox = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # The thread goes on starting bubblewrap whatever happens here: end what it started.
            try:
                await self._destroy(await spawning)
            except Exception:
                self._free.append(cgroup)
            raise
        except BaseException:
            self._free.append(cgroup)
            raise
        # From here on, destroying the sandbox empties its cgroup and gives it back.
        try:
            sandbox.ctrl.setblocking(False)
            try:
                async with asyncio.timeout(_READY_TIMEOUT_S):
                    ready = await loop.sock_recv(sandbox.ctrl, 16)
            except TimeoutError:
                ready = b""
            if ready != b"R":
                raise SandboxError(f"bubblewrap did not start the sandbox: {self._startup_error(sandbox)}")
            children = _children(sandbox.proc.pid)
            if len(children) != 1:
                raise SandboxError(f"expected one init process under bubblewrap, found {children}")
            sandbox.init_pid = int(children[0])
            # Init (and its namespaces) stay in the slot's cgroup; bubblewrap, outside them, leaves it.
            self._launchers.attach(sandbox.proc.pid)
        except BaseException:
            await self._destroy(sandbox)
            raise
        return sandbox

    def adopt(self, sandbox: Sandbox) -> None:
        """Make a prepared sandbox the one the slot's next run goes to."""
        if self.sandbox is not None:
            raise SandboxError(f"slot {self.index} already has a sandbox ready")
        self.sandbox = sandbox

    async def discard(self, sandbox: Sandbox) -> None:
        """Stop a sandbox that was prepared but will not be used."""
        await self._destroy(sandbox)

    def _startup_error(self, sandbox: Sandbox) -> str:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            sandbox.proc.wait(timeout=2)
        os.set_blocking(sandbox.stderr, False)
        try:
            text = os.read(sandbox.stderr, 4096).decode(errors="replace").strip()
        except OSError:
            text = ""
        return text or f"exit status {sandbox.proc.poll()}"

    # --- running ------------------------------------------------------------------------------------

    async def execute(self, phase: Phase) -> Outcome:
        """Run one program in the warm sandbox and gather what happened; the sandbox is used up."""
        sandbox = self.sandbox
        if sandbox is None or sandbox.cgroup is None:
            raise SandboxError("the slot has no sandbox ready")
        self.sandbox = None
        cgroup = sandbox.cgroup
        loop = asyncio.get_running_loop()
        limits = phase.limits
        overflow = asyncio.Event()
        listen = phase.on_output
        out = OutputCapture(
            loop, sandbox.stdout, limits.output_bytes, overflow, (lambda b: listen("stdout", b)) if listen else None
        )
        err = OutputCapture(
            loop, sandbox.stderr, limits.output_bytes, overflow, (lambda b: listen("stderr", b)) if listen else None
        )
        feeding: asyncio.Future[None] | None = None
        try:
            mark = cgroup.prepare(limits.memory_kb * 1024, limits.processes + 1)  # + init
            writer = send_go(sandbox.ctrl, phase)
            if writer is not None and phase.stdin_feed is not None:
                feeding = asyncio.ensure_future(pump(phase.stdin_feed, writer))
            started = time.monotonic()
            stop, raw_report = await self._supervise(sandbox, cgroup, limits, mark, overflow, started)
            wall_s = time.monotonic() - started
            if stop != "reported":
                self._kill(sandbox)
            # Output the program wrote just before it ended is still in the pipes: read it to the end,
            # which comes once every process holding them is gone.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DRAIN_TIMEOUT_S):
                    await asyncio.gather(out.closed.wait(), err.closed.wait())
            usage = cgroup.measure(mark)
        finally:
            if feeding is not None:
                feeding.cancel()  # closes the pipe's write end
                await asyncio.gather(feeding, return_exceptions=True)
            out.stop()
            err.stop()
            await self._destroy(sandbox)
        report = parse_report(raw_report, wall_s)
        cpu_ms = round(usage.cpu_ns / 1_000_000)
        if stop == "cpu":
            cpu_ms = max(cpu_ms, limits.cpu_ms + 1)
        return Outcome(
            wait_status=report.wait_status,
            cpu_ms=cpu_ms,
            wall_ms=report.wall_ms,
            # The cgroup's peak counts every process (and the page cache they bring in), but charges in
            # batches, so a tiny program can show nothing; the largest process's own peak RSS fills that in.
            memory_kb=max(report.maxrss_kb, (usage.memory_peak_bytes or 0) // 1024),
            stdout=bytes(out.data),
            stderr=bytes(err.data),
            stdout_overflow=out.overflowed,
            stderr_overflow=err.overflowed,
            oom_killed=usage.oom_killed,
            timed_out_wall=stop == "wall",
            start_error=report.start_error,
            process_limit_hit=usage.process_limit_hit,
            # Only a failed run can have been stopped by the file size limit (Python, for one, ignores
            # SIGXFSZ and fails with EFBIG): look at the files only then.
            file_limit_hit=not _succeeded(report.wait_status) and self._file_limit_hit(limits),
        )

    async def _supervise(
        self, sandbox: Sandbox, cgroup: SlotCgroup, limits: Limits, mark: Mark, overflow: asyncio.Event, started: float
    ) -> tuple[Stop, bytes]:
        """Wait for init's report, enforcing the wall and total CPU limits and the output limit meanwhile.

        CPU time is read from the cgroup, so it counts every process of the run: first when the run could
        have used its whole allowance (the CPU quota caps it at ``cpus`` per second of wall time), then
        every 100 ms. Returns why the wait ended, and the report if init sent one.
        """
        loop = asyncio.get_running_loop()
        report_task = asyncio.ensure_future(loop.sock_recv(sandbox.ctrl, 512))
        overflow_task = asyncio.ensure_future(overflow.wait())
        deadline = started + limits.wall_ms / 1000
        next_cpu_check = started + limits.cpu_ms / 1000
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return "wall", b""
                if now >= next_cpu_check:
                    if cgroup.cpu_ns() - mark.cpu_ns > limits.cpu_ms * 1_000_000:
                        return "cpu", b""
                    next_cpu_check = now + _CPU_CHECK_S
                timeout = max(0.0, min(deadline, next_cpu_check) - now)
                done, _ = await asyncio.wait(
                    {report_task, overflow_task}, timeout=timeout, return_when="FIRST_COMPLETED"
                )
                if report_task in done:
                    return "reported", report_task.result()
                if overflow_task in done:
                    return "overflow", b""
        finally:
            for task in (report_task, overflow_task):
                task.cancel()
            await asyncio.gather(report_task, overflow_task, return_exceptions=True)

    def _file_limit_hit(self, limits: Limits) -> bool:
        """Whether the program filled its work directory or wrote a file as large as it may."""
        try:
            if os.statvfs(self.dir).f_bavail == 0:
                return True
            cap = limits.file_size_kb * 1024
            for root in (self.work, self.tmp):
                for path in root.rglob("*"):
                    if path.is_file() and not path.is_symlink() and path.stat().st_size >= cap:
                        return True
        except OSError:
            return False
        return False

    # --- ending -------------------------------------------------------------------------------------

    def _kill(self, sandbox: Sandbox) -> None:
        """End the sandbox: killing its init (process 1 of its PID namespace) kills every process in it."""
        with contextlib.suppress(ProcessLookupError):
            if sandbox.init_pid:
                os.kill(sandbox.init_pid, signal.SIGKILL)
        if sandbox.cgroup is not None:
            sandbox.cgroup.kill()

    async def _destroy(self, sandbox: Sandbox) -> None:
        """Kill whatever is left of a sandbox, reap bubblewrap and wait until its cgroup is empty."""
        self._kill(sandbox)
        if sandbox.proc.poll() is None:  # first: a sandbox that failed to start still has bubblewrap inside
            _kill_bubblewrap(sandbox.proc.pid)
            await asyncio.to_thread(sandbox.proc.wait)
        deadline = time.monotonic() + _EMPTY_TIMEOUT_S
        cgroup = sandbox.cgroup
        while cgroup is not None and cgroup.procs():
            if time.monotonic() > deadline:
                sandbox.close_fds()  # the cgroup stays taken: the slot will not put another sandbox there
                raise SandboxError(f"slot {self.index}: processes {cgroup.procs()} survived SIGKILL")
            cgroup.kill()
            await asyncio.sleep(0.001)
        if cgroup is not None:
            sandbox.cgroup = None
            self._free.append(cgroup)
        sandbox.close_fds()

    async def release(self) -> None:
        """End the current sandbox, if it was not used (a sandbox prepared ahead stays for the next run)."""
        if self.sandbox is not None:
            sandbox, self.sandbox = self.sandbox, None
            await self._destroy(sandbox)

    async def close(self) -> None:
        """End every sandbox of the slot, prepared ahead or not."""
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            with contextlib.suppress(SandboxError):
                await self.discard(await ahead)
        await self.release()


def _succeeded(wait_status: int | None) -> bool:
    return wait_status is not None and os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0


def _kill_bubblewrap(pid: int) -> None:
    """Kill a bubblewrap and the child it cloned, even one still setting up.

    Until bubblewrap lets its child go on, the child waits for it without any parent-death signal, so
    killing bubblewrap alone would leave the child waiting forever. Stopped first, bubblewrap cannot
    clone while its children are read and killed.
    """
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    try:
        children = _children(pid)
    except OSError:
        children = []
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[str]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return fh.read().split()
