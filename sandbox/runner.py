"""Running programs: the :class:`Runner` interface, and :class:`LocalRunner`, the in-process pool.

Callers see one async interface whichever way jobs are executed::

    runner = LocalRunner(SandboxConfig())             # or distributed.CeleryRunner(...) when scaled
    result = await runner.run(RunRequest(language="python", source="print(input())", stdin="hi"))
    verdict = await runner.judge(JudgeRequest(language="c", source=..., tests=[TestCase(...)]))
    job = await runner.submit(request, context={...})  # admitted now (or QueueFull), result later
    result = await job.result

:class:`LocalRunner` owns ``workers`` concurrent runs and a bounded queue (``queue`` more may wait);
past that :meth:`submit` raises :class:`QueueFull` at once instead of piling work up. It keeps
``workers + spare_slots`` slots with a sandbox already prepared (:mod:`sandbox.slot`), so a run starts
as soon as it is admitted and preparing the next sandbox happens after the answer is out.

Jobs may carry a ``context`` (plain strings) for :class:`JobHooks`: the hooks run where the job runs
(in this process here, in the Celery worker when scaled), once when it starts and once when it has a
result, which is how results are stored and pushed to users in both modes. A job's ``user_id`` in its
context also decides its turn: waiting jobs get a worker by turns between users (:mod:`sandbox.fair`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sandbox import cgroups, host
from sandbox.console import InputFeed, InputRefusal, InputRefused
from sandbox.core import InvalidRequest, case_verdict, classify, compile_failed, lowered, overall_verdict
from sandbox.fair import FairGate
from sandbox.languages import LANGUAGES, Language, LanguageInfo, installed_ids, installed_languages
from sandbox.launch import Phase, bwrap_argv
from sandbox.models import (
    CaseResult,
    JudgeRequest,
    JudgeResult,
    Limits,
    PhaseResult,
    RunRequest,
    RunResult,
    SourceFile,
    Status,
    Verdict,
)
from sandbox.seccomp import filter_for
from sandbox.slot import SandboxError, Slot

log = logging.getLogger(__name__)

Request = RunRequest | JudgeRequest
Result = RunResult | JudgeResult

RUN_LIMITS = Limits(
    cpu_ms=5_000, wall_ms=10_000, memory_kb=256 * 1024, processes=64, output_bytes=64 * 1024,
    file_size_kb=16 * 1024, open_files=128,
)  # fmt: skip
COMPILE_LIMITS = Limits(
    cpu_ms=10_000, wall_ms=20_000, memory_kb=512 * 1024, processes=32, output_bytes=64 * 1024,
    file_size_kb=64 * 1024, open_files=256,
)  # fmt: skip


class QueueFull(Exception):
    """Every worker is busy and the queue is full: try again later."""


class SandboxUnavailable(Exception):
    """This machine cannot run sandboxes (the message says why); nothing is ever run unsandboxed."""


@dataclass(frozen=True)
class SandboxConfig:
    """How the in-process pool runs sandboxes.

    Args:
        bwrap: the bubblewrap program (a name on PATH or a path).
        user: the unprivileged system user sandboxes run as (created if missing).
        runtime_dir: root-owned directory for the init helper and the slots' tmpfs mounts.
        cgroup_root: where the cgroup hierarchies are mounted.
        cgroup_parent: the cgroup (under each hierarchy's root) the pools' cgroups go in.
        workers: programs run at once.
        spare_slots: slots beyond ``workers``, so a run never waits for a sandbox to be prepared.
        queue: runs that may wait for a worker; past that, :class:`QueueFull`.
        cpus_per_run: CPU cores one run may use at once (cgroup CPU quota).
        work_dir_kb: size of each slot's tmpfs (work directory and /tmp together).
        work_dir_inodes: files and directories that tmpfs may hold.
        run_limits: the maximum limits of a program's run; requests may only lower them.
        compile_limits: the limits of a compile step.
    """

    bwrap: str = "bwrap"
    user: str = "studyhall-sandbox"
    runtime_dir: Path = Path("/run/studyhall-sandbox")
    cgroup_root: Path = Path("/sys/fs/cgroup")
    cgroup_parent: str = "studyhall-sandbox"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    spare_slots: int = 1
    queue: int = 32
    cpus_per_run: float = 1.0
    work_dir_kb: int = 64 * 1024
    work_dir_inodes: int = 4096
    run_limits: Limits = RUN_LIMITS
    compile_limits: Limits = COMPILE_LIMITS


@dataclass(frozen=True)
class Job:
    """One request as it travels to whoever executes it."""

    id: str
    request: Request
    context: dict[str, str] = field(default_factory=dict)


class JobHooks(Protocol):
    """Called where a job runs: ``started`` when a worker takes it, ``finished`` with its result."""

    async def started(self, job: Job) -> None: ...

    async def finished(self, job: Job, result: Result) -> None: ...


@dataclass
class Submitted:
    """An admitted job; ``result`` resolves once it has run and its hooks are done."""

    job: Job
    result: asyncio.Future[Result]


class Runner(Protocol):
    """What the rest of studyhall runs programs through (in-process pool or Celery workers)."""

    @property
    def unavailable(self) -> str | None:
        """Why programs cannot be run at all, or None."""
        ...

    async def submit(
        self, request: Request, context: dict[str, str] | None = None, job_id: str | None = None
    ) -> Submitted:
        """Admit a job (raising :class:`QueueFull`, :class:`SandboxUnavailable` or
        :class:`~sandbox.core.InvalidRequest` at once) and start it; its result comes later."""
        ...

    async def run(self, request: RunRequest) -> RunResult: ...

    async def judge(self, request: JudgeRequest) -> JudgeResult: ...

    async def languages(self) -> list[LanguageInfo]: ...

    async def send_input(self, job_id: str, data: bytes, eof: bool, max_total: int) -> None:
        """Feed an interactive run's standard input (``eof``: then close it), wherever the job runs; raise
        :class:`~sandbox.console.InputRefused` if it cannot take it (ended, input closed, ``max_total``
        bytes fed already). Input sent before the job starts waits for it."""
        ...

    def validate(self, request: Request) -> None:
        """Raise :class:`~sandbox.core.InvalidRequest` if the request can never run here."""
        ...

    async def ready(self) -> None:
        """Get ready to take jobs, or raise :class:`SandboxUnavailable` saying why not (tried again next time)."""
        ...

    async def close(self) -> None: ...


def resolve(request: Request, installed: set[str]) -> tuple[Language, list[SourceFile]]:
    """The request's language and files (a single ``source`` becomes the language's main file)."""
    lang = LANGUAGES.get(request.language)
    if lang is None or lang.id not in installed:
        raise InvalidRequest(f"unknown language {request.language!r}; known: {', '.join(sorted(installed))}")
    files = request.files or [SourceFile(path=lang.main_file, content=request.source or "")]
    if lang.compiled and not lang.sources([f.path for f in files]):
        raise InvalidRequest(f"a {lang.name} program needs at least one {'/'.join(lang.suffixes)} file")
    return lang, list(files)


def validate(request: Request, maximum: Limits) -> None:
    """Raise :class:`~sandbox.core.InvalidRequest` unless the request names an installed language, has
    files that language can run, and asks for no limit above ``maximum``."""
    resolve(request, installed_ids())
    lowered(maximum, request.limits)


def internal_error(message: str) -> PhaseResult:
    return PhaseResult(
        status=Status.INTERNAL_ERROR, stdout="", stderr="", exit_code=None, signal=None, cpu_ms=0, wall_ms=0,
        memory_kb=0, truncated=False, message=message,
    )  # fmt: skip


def failed_result(request: Request, message: str) -> Result:
    """The result of a job the sandbox could not run at all (``internal_error``)."""
    failed = internal_error(message)
    if isinstance(request, JudgeRequest):
        return JudgeResult(verdict=Verdict.INTERNAL_ERROR, passed=0, total=len(request.tests), compile=failed, cases=[])
    return RunResult(**failed.model_dump())


class _NoHooks:
    async def started(self, job: Job) -> None:
        return None

    async def finished(self, job: Job, result: Result) -> None:
        return None


class WaitForResult:
    """``run`` and ``judge``, which wait for a job's result, for any runner's ``submit``."""

    async def submit(
        self, request: Request, context: dict[str, str] | None = None, job_id: str | None = None
    ) -> Submitted:
        raise NotImplementedError

    async def run(self, request: RunRequest) -> RunResult:
        result = await (await self.submit(request)).result
        assert isinstance(result, RunResult)
        return result

    async def judge(self, request: JudgeRequest) -> JudgeResult:
        result = await (await self.submit(request)).result
        assert isinstance(result, JudgeResult)
        return result


class LocalRunner(WaitForResult):
    """The in-process pool (see the module docstring). Open lazily: the first job prepares the slots."""

    def __init__(self, config: SandboxConfig | None = None, hooks: JobHooks | None = None) -> None:
        self.config = config or SandboxConfig()
        self.hooks: JobHooks = hooks or _NoHooks()
        self.probe = host.probe(self.config.bwrap, self.config.cgroup_root)
        self._failure: str | None = None
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._closed = False
        self._slots: list[Slot] = []
        self._ready: asyncio.Queue[Slot] = asyncio.Queue()
        # Jobs wait for a worker by turns between their users (``context["user_id"]``), not first come,
        # first served: one user's queued jobs never keep everyone else's waiting behind them.
        self._workers = FairGate(self.config.workers)
        self._admitted = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._languages: list[LanguageInfo] | None = None
        self._inputs: dict[str, InputFeed] = {}  # the interactive runs admitted and not finished, by job id
        self._tree: cgroups.CgroupTree | None = None
        self._pool_dir: Path | None = None
        self._init_dir: Path | None = None
        self.name: str | None = None  # the pool's directory and cgroup name, once open

    # --- the Runner interface -----------------------------------------------------------------------

    @property
    def unavailable(self) -> str | None:
        return self.probe.reason or self._failure

    def fail(self, reason: str) -> None:
        """Mark the pool unusable (its host could not be prepared); it will try again on the next job."""
        self._failure = reason

    @property
    def queued(self) -> int:
        """Jobs admitted and not finished (running or waiting)."""
        return self._admitted

    async def languages(self) -> list[LanguageInfo]:
        if self._languages is None:
            self._languages = await asyncio.to_thread(installed_languages)
        return self._languages

    def validate(self, request: Request) -> None:
        validate(request, self.config.run_limits)

    async def ready(self) -> None:
        await self.open()

    async def submit(
        self, request: Request, context: dict[str, str] | None = None, job_id: str | None = None
    ) -> Submitted:
        if self._closed:
            raise SandboxUnavailable("the sandbox pool is shut down")
        if self.probe.reason is not None:
            raise SandboxUnavailable(self.probe.reason)
        lang, files = resolve(request, installed_ids())
        limits = lowered(self.config.run_limits, request.limits)
        await self.open()
        if self._admitted >= self.config.workers + self.config.queue:
            raise QueueFull(f"{self._admitted} programs are running or waiting; try again shortly")
        job = Job(id=job_id or uuid.uuid4().hex, request=request, context=dict(context or {}))
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._admitted += 1
        if isinstance(request, RunRequest) and request.interactive:
            self._inputs[job.id] = InputFeed(request.stdin.encode())
        self._own(self._execute_job(job, lang, files, limits, future))
        return Submitted(job, future)

    def input_feed(self, job_id: str) -> InputFeed | None:
        """The input of an interactive job admitted here and not finished (what a worker relays into)."""
        return self._inputs.get(job_id)

    async def send_input(self, job_id: str, data: bytes, eof: bool, max_total: int) -> None:
        feed = self._inputs.get(job_id)
        if feed is None:
            raise InputRefused(InputRefusal.FINISHED, "the run has finished")
        feed.max_total = max_total
        feed.feed(data, eof)

    async def close(self) -> None:
        """Stop every run (their sandboxes are killed), then remove the slots' mounts and cgroups."""
        self._closed = True
        while self._tasks:  # a cancelled job may still hand its slot back: cancel until none is left
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for slot in self._slots:
            try:
                await slot.close()
            except Exception:
                log.exception("could not close sandbox slot %d", slot.index)
        self._teardown()

    # --- opening ------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Prepare the slots (the first job does this if nobody did); :class:`SandboxUnavailable` if it fails."""
        async with self._open_lock:
            if self._opened:
                return
            if self.probe.reason is not None:
                raise SandboxUnavailable(self.probe.reason)
            try:
                await self._open()
            except (host.HostError, cgroups.CgroupError, SandboxError, OSError) as exc:
                self._failure = f"the sandbox could not be prepared: {exc}"
                log.error("%s", self._failure)
                self._teardown()
                raise SandboxUnavailable(self._failure) from None
            self._failure = None
            self._opened = True

    async def _open(self) -> None:
        config = self.config
        user = host.ensure_user(config.user)
        host.prepare_runtime_dir(config.runtime_dir)
        init = await asyncio.to_thread(host.build_init, config.runtime_dir)
        name = self.name = host.pool_name()
        tree = cgroups.open_tree(config.cgroup_root, config.cgroup_parent, config.cpus_per_run)
        host.remove_dead_pools(config.runtime_dir, cgroups.parent_dirs(tree), user)
        self._tree = cgroups.open_tree(config.cgroup_root, f"{config.cgroup_parent}/{name}", config.cpus_per_run)
        self._pool_dir = config.runtime_dir / name
        self._pool_dir.mkdir(mode=0o711, exist_ok=True)
        self._init_dir = self._pool_dir / "bin"
        inside = host.install_init(init, self._init_dir)  # what sandboxes run as /.init
        launchers = self._tree.slot("launchers")
        seccomp = filter_for()
        bwrap = self.probe.bwrap or config.bwrap
        for index in range(config.workers + config.spare_slots):
            directory = self._pool_dir / f"slot-{index}"
            host.mount_tmpfs(directory, config.work_dir_kb * 1024, config.work_dir_inodes)
            halves = (self._tree.slot(f"slot-{index}-a"), self._tree.slot(f"slot-{index}-b"))
            slot = Slot(
                index,
                directory,
                halves,
                user,
                bwrap_argv(bwrap, directory, inside, config.work_dir_kb * 1024),
                seccomp,
                init,
                launchers,
            )
            self._slots.append(slot)
            slot.reset_files()
        await asyncio.gather(*(slot.warm() for slot in self._slots))
        for slot in self._slots:
            self._ready.put_nowait(slot)
        log.info(
            "sandbox pool ready: %d workers, %d slots, cgroup v%d, user %s", config.workers, len(self._slots),
            self._tree.version, user.name,
        )  # fmt: skip

    def _teardown(self) -> None:
        for slot in self._slots:
            for cgroup in slot.cgroups:
                try:
                    cgroup.remove()
                except OSError as exc:
                    log.warning("could not remove a cgroup of slot %d: %s", slot.index, exc)
            host.unmount(slot.dir)
        self._slots.clear()
        if self._init_dir is not None:
            host.unmount(self._init_dir)
            self._init_dir = None
        if self._tree is not None:
            with contextlib.suppress(OSError):
                self._tree.remove()
            self._tree = None
        if self._pool_dir is not None:
            with contextlib.suppress(OSError):
                for child in self._pool_dir.iterdir():
                    child.rmdir()
                self._pool_dir.rmdir()
            self._pool_dir = None

    # --- executing ----------------------------------------------------------------------------------

    def _own(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute_job(
        self, job: Job, lang: Language, files: list[SourceFile], limits: Limits, future: asyncio.Future[Result]
    ) -> None:
        try:
            result: Result
            try:
                async with self._slot(job.context.get("user_id", "")) as slot:
                    await self._hook(self.hooks.started(job), job)
                    if isinstance(job.request, JudgeRequest):
                        result = await self._judge(slot, lang, files, limits, job.request)
                    else:
                        # Hooks with an ``output(job, stream, data)`` method see the run's output live.
                        listener = getattr(self.hooks, "output", None)
                        on_output = (lambda stream, data: listener(job, stream, data)) if listener else None
                        feed = self._inputs.get(job.id)
                        result = await self._run(slot, lang, files, limits, job.request, on_output, feed)
            except SandboxUnavailable as exc:
                result = failed_result(job.request, str(exc))
            self._end_input(job)
            await self._hook(self.hooks.finished(job, result), job)
            if not future.done():
                future.set_result(result)
        except asyncio.CancelledError:
            future.cancel()  # the pool is shutting down
            raise
        except Exception as exc:
            log.exception("sandbox job %s failed", job.id)
            if not future.done():
                future.set_exception(exc)
        finally:
            self._end_input(job)
            self._admitted -= 1

    def _end_input(self, job: Job) -> None:
        feed = self._inputs.pop(job.id, None)
        if feed is not None:
            feed.end()

    async def _hook(self, call: Awaitable[None], job: Job) -> None:
        try:
            await call
        except Exception:
            log.exception("a sandbox job hook failed for job %s", job.id)

    @contextlib.asynccontextmanager
    async def _slot(self, user: str) -> AsyncIterator[Slot]:
        async with self._workers.place(user):
            slot = await self._ready.get()
            try:
                yield slot
            finally:
                if not self._closed:
                    self._own(self._recycle(slot))

    async def _recycle(self, slot: Slot) -> None:
        """Empty a used slot and prepare its next sandbox, off the answer's path."""
        try:
            await slot.release()
            slot.reset_files()
            await slot.warm()
        except asyncio.CancelledError:
            raise
        except Exception:
            # The slot goes back cold; the next run on it prepares it itself and reports a failure.
            log.exception("could not prepare sandbox slot %d", slot.index)
        self._ready.put_nowait(slot)

    async def _phase(
        self, slot: Slot, phase: Phase, oom_markers: tuple[str, ...] = (), *, then_more: bool = False
    ) -> PhaseResult:
        """Run one program in the slot; ``then_more``: another follows in this job (the run after a
        compile, the next test case), whose sandbox is prepared while this one runs."""
        try:
            if slot.sandbox is None:
                await slot.warm()
            if then_more:
                slot.prepare_ahead()
            outcome = await slot.execute(phase)
        except SandboxError as exc:
            log.error("sandbox slot %d failed: %s", slot.index, exc)
            return internal_error(f"the sandbox failed: {exc}")
        return classify(outcome, phase.limits, oom_markers=oom_markers)

    async def _compile(self, slot: Slot, lang: Language, files: list[SourceFile]) -> PhaseResult | None:
        if lang.compile_argv is None:
            return None
        argv = lang.compile_argv(lang.sources([f.path for f in files]))
        return await self._phase(
            slot, Phase(argv=argv, limits=self.config.compile_limits, env=lang.env), then_more=True
        )

    def _syntax_suspected(self, lang: Language, files: list[SourceFile], run: PhaseResult) -> list[str]:
        """The files to syntax-check when an interpreted program's run failed mentioning a syntax error.

        The check runs only then: a second sandbox before every run would double a hello-world's time.
        The check on the files as handed in decides, so a program that merely prints "SyntaxError" and
        fails (or raises one from ``eval``) stays a runtime error.
        """
        if lang.check_argv is None or run.status != Status.RUNTIME_ERROR:
            return []
        if not any(marker in run.stderr for marker in lang.syntax_markers):
            return []
        return lang.checked_sources([f.path for f in files])

    async def _check(self, slot: Slot, lang: Language, files: list[SourceFile], paths: list[str]) -> PhaseResult:
        """Check the sources' syntax (``lang.check_argv``) in a fresh sandbox, on the files as handed in."""
        assert lang.check_argv is not None
        slot.reset_files()
        slot.write_files(files)
        phase = Phase(argv=lang.check_argv(paths), limits=self.config.compile_limits, env=lang.env)
        return await self._phase(slot, phase)

    def _run_phase(
        self,
        lang: Language,
        files: list[SourceFile],
        limits: Limits,
        stdin: str,
        wanted: str | None = None,
        on_output: Callable[[str, bytes], None] | None = None,
        feed: InputFeed | None = None,
        *,
        live: bool = False,
    ) -> Phase:
        """``live``: a run whose output is shown as written and kept if a limit kills it, so the program's
        stdout is not left in its own buffer (see :class:`~sandbox.languages.Language`)."""
        entry = lang.entry([f.path for f in files], wanted)
        argv = lang.run_argv(entry, limits)
        env = lang.env
        if live:
            argv = [*lang.live_prefix, *argv]
            env = {**env, **lang.live_env}
        return Phase(
            argv=argv,
            limits=limits,
            stdin=stdin.encode(),
            env=env,
            address_space_limit=lang.address_space_limit,
            on_output=on_output,
            stdin_feed=feed,
        )

    async def _run(
        self,
        slot: Slot,
        lang: Language,
        files: list[SourceFile],
        limits: Limits,
        request: RunRequest,
        on_output: Callable[[str, bytes], None] | None = None,
        feed: InputFeed | None = None,
    ) -> RunResult:
        slot.write_files(files)
        compiled = await self._compile(slot, lang, files)
        if compiled is not None and compiled.status != Status.OK:
            return RunResult(**compile_failed(compiled).model_dump(), compile=compiled)
        phase = self._run_phase(lang, files, limits, request.stdin, request.entry, on_output, feed, live=True)
        run = await self._phase(slot, phase, lang.oom_markers)
        suspected = self._syntax_suspected(lang, files, run)
        if suspected:
            checked = await self._check(slot, lang, files, suspected)
            if checked.status != Status.OK:  # the program should never have run: as a compile error
                return RunResult(**compile_failed(checked).model_dump(), compile=checked)
        return RunResult(**run.model_dump(), compile=compiled)

    async def _judge(
        self, slot: Slot, lang: Language, files: list[SourceFile], limits: Limits, request: JudgeRequest
    ) -> JudgeResult:
        total = len(request.tests)
        slot.write_files(files)
        compiled = await self._compile(slot, lang, files)
        if compiled is not None and compiled.status != Status.OK:
            failed = compile_failed(compiled)
            return JudgeResult(verdict=Verdict(failed.status.value), passed=0, total=total, compile=failed, cases=[])
        binary = (slot.work / "main").read_bytes() if compiled is not None else None
        cases: list[CaseResult] = []
        syntax_ok = False  # the syntax check ran and passed: no need to run it again
        for index, test in enumerate(request.tests):
            if request.stop_at_first_failure and any(c.verdict != Verdict.ACCEPTED for c in cases):
                cases.append(CaseResult(index=index, verdict=Verdict.SKIPPED, run=None))
                continue
            if index > 0:  # every case starts from the program as it was handed in (and compiled)
                slot.reset_files()
                slot.write_files(files)
                if binary is not None:
                    slot.write_executable("main", binary)
            run = await self._phase(
                slot,
                self._run_phase(lang, files, limits, test.stdin, request.entry),
                lang.oom_markers,
                then_more=index + 1 < total,
            )
            suspected = [] if syntax_ok else self._syntax_suspected(lang, files, run)
            if suspected:
                checked = await self._check(slot, lang, files, suspected)
                if checked.status != Status.OK:
                    failed = compile_failed(checked)
                    return JudgeResult(
                        verdict=Verdict(failed.status.value), passed=0, total=total, compile=failed, cases=[]
                    )
                syntax_ok = True
            cases.append(CaseResult(index=index, verdict=case_verdict(run, test.expected_output), run=run))
        passed = sum(c.verdict == Verdict.ACCEPTED for c in cases)
        return JudgeResult(verdict=overall_verdict(cases), passed=passed, total=total, compile=compiled, cases=cases)
