"""Executions: run a program in the sandbox over REST, and the languages it knows.

``POST /executions`` stores the execution, admits the job to the runner (429 ``rate_limited`` when the
queue is full or the caller already has too many waiting, 503 ``unavailable`` when this machine cannot
run sandboxes) and answers 202 with the queued execution, or, with ``?wait=true``, 200 with the
finished one. ``GET /executions/{id}`` shows one to its owner (and admins). With ``tests`` the program
is judged instead: compiled once, run on each case in a fresh sandbox, compared with the expected output.

Wherever the job runs (this process's pool, or a Celery worker) the same :class:`ExecutionHooks` mark
it running, store the result and push ``execution:finished`` to the owner's personal room
(``user:<id>``) once it is committed. An execution always ends ``finished``: output Postgres cannot hold
as text (NUL bytes) is stored with each NUL shown as U+FFFD and ``nul_replaced`` set, and a result that
cannot be stored at all is replaced by an ``internal_error`` saying so.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from core_api.context import Core, Tx, new_id
from core_api.db import Connection, Record
from core_api.errors import AppError, ErrorCode, conflict, invalid, not_found
from core_api.http import Api, Call, Input, Principal, Query, Reply
from core_api.settings import Settings
from sandbox.console import InputRefusal, InputRefused
from sandbox.core import InvalidRequest
from sandbox.languages import LanguageInfo
from sandbox.models import (
    MAX_FILES,
    MAX_SOURCE_CHARS,
    MAX_STDIN_CHARS,
    MAX_TESTS,
    CaseResult,
    JudgeRequest,
    Limits,
    LimitsIn,
    PhaseResult,
    RunRequest,
    RunResult,
    SourceFile,
    Status,
    TestCase,
    Verdict,
)
from sandbox.runner import (
    Job,
    QueueFull,
    Request,
    Result,
    Runner,
    SandboxConfig,
    SandboxUnavailable,
    internal_error,
)

log = logging.getLogger(__name__)

api = Api()
TAG = "executions"
CASE_OUTPUT_CHARS = 4096  # per judged case, what is kept of stdout and stderr
FINISHED_EVENT = "execution:finished"
RUN_OUTPUT_EVENT = "run:output"
RUN_FINISHED_EVENT = "run:finished"
STALE_AFTER_MIN = 10  # an unfinished execution older than this (its node died) no longer counts as waiting
NUL = "\x00"
NUL_SHOWN_AS = "\ufffd"  # U+FFFD REPLACEMENT CHARACTER, as for bytes that are not UTF-8

# --- schemas -------------------------------------------------------------------------------------


class ExecutionIn(Input):
    language: str = Field(min_length=1, max_length=32, description="A language id from `GET /languages`.")
    source: str | None = Field(
        None, max_length=MAX_SOURCE_CHARS, description="The program as one file (the language's main file)."
    )
    files: list[SourceFile] | None = Field(
        None, min_length=1, max_length=MAX_FILES, description="Or the program as several files."
    )
    stdin: str = Field("", max_length=MAX_STDIN_CHARS, description="Standard input of the run.")
    limits: LimitsIn | None = Field(None, description="Lower limits for the run (never above the server's).")
    tests: list[TestCase] | None = Field(
        None, min_length=1, max_length=MAX_TESTS, description="Judge the program on these cases instead of one run."
    )
    stop_at_first_failure: bool = Field(False, description="With `tests`: skip the cases after the first failure.")
    entry: str | None = Field(
        None,
        max_length=255,
        description="With `files`: the file to run (default: the language's main file, else the first).",
    )

    def to_request(self) -> Request:
        common: dict[str, Any] = {
            "language": self.language,
            "source": self.source,
            "files": self.files,
            "limits": self.limits,
            "entry": self.entry,
        }
        try:
            if self.tests is not None:
                if self.stdin:
                    raise invalid("give stdin in each test case, not beside `tests`")
                return JudgeRequest(**common, tests=self.tests, stop_at_first_failure=self.stop_at_first_failure)
            return RunRequest(**common, stdin=self.stdin)
        except ValidationError as exc:
            raise invalid(exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")) from None


class ExecutionQuery(Query):
    wait: bool = Field(False, description="Answer once the execution has finished (200), or after a timeout (202).")


class CaseOut(BaseModel):
    index: int
    verdict: Verdict
    status: Status | None = Field(description="How the run on this case ended; null when skipped.")
    stdout: str = Field(description=f"The first {CASE_OUTPUT_CHARS} characters of the case's output.")
    stderr: str
    exit_code: int | None
    signal: int | None
    cpu_ms: int | None
    wall_ms: int | None
    memory_kb: int | None
    message: str | None


class JudgeOut(BaseModel):
    verdict: Verdict = Field(description="`accepted` when every case is, else the first failing case's verdict.")
    passed: int
    total: int
    cases: list[CaseOut]


class ExecutionOut(BaseModel):
    id: uuid.UUID
    language: str
    kind: Literal["run", "judge"]
    state: Literal["queued", "running", "finished"]
    status: Status | None = Field(
        description="How the run ended (for a judgement: its first failing run's); null until finished."
    )
    stdout: str
    stderr: str
    exit_code: int | None
    signal: int | None
    cpu_ms: int | None
    wall_ms: int | None
    memory_kb: int | None
    truncated: bool
    nul_replaced: bool = Field(
        False,
        description="The program wrote NUL bytes, which text cannot hold: each is shown as U+FFFD (the replacement "
        "character) in `stdout`, `stderr`, `compile` and the judged cases. Judging compared the real output.",
    )
    message: str | None
    compile: PhaseResult | None = Field(description="The compile step of compiled languages.")
    judge: JudgeOut | None = Field(description="Per-case verdicts when the execution judged test cases.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class LanguagesOut(BaseModel):
    items: list[LanguageInfo]


# --- configuration -------------------------------------------------------------------------------


def run_limits(settings: Settings) -> Limits:
    return Limits(
        cpu_ms=settings.sandbox_cpu_ms,
        wall_ms=settings.sandbox_wall_ms,
        memory_kb=settings.sandbox_memory_kb,
        processes=settings.sandbox_processes,
        output_bytes=settings.sandbox_output_bytes,
        file_size_kb=settings.sandbox_file_size_kb,
        open_files=settings.sandbox_open_files,
    )


def sandbox_config(settings: Settings) -> SandboxConfig:
    """The in-process pool's configuration from the settings (nodes and Celery workers alike)."""
    compile_limits = Limits(
        cpu_ms=settings.sandbox_compile_cpu_ms,
        wall_ms=settings.sandbox_compile_wall_ms,
        memory_kb=settings.sandbox_compile_memory_kb,
        processes=32,
        output_bytes=settings.sandbox_output_bytes,
        file_size_kb=max(64 * 1024, settings.sandbox_file_size_kb),
        open_files=256,
    )
    return SandboxConfig(
        bwrap=settings.sandbox_bwrap,
        user=settings.sandbox_user,
        runtime_dir=settings.sandbox_runtime_dir,
        cgroup_root=settings.sandbox_cgroup_root,
        workers=settings.sandbox_workers,
        queue=settings.sandbox_queue,
        cpus_per_run=settings.sandbox_cpus_per_run,
        work_dir_kb=settings.sandbox_work_dir_kb,
        run_limits=run_limits(settings),
        compile_limits=compile_limits,
    )


# --- storing and announcing results --------------------------------------------------------------

_COLUMNS = "id, user_id, language, kind, state, result, created_at, started_at, finished_at"
EXECUTION_COLUMNS = _COLUMNS  # for queries of other packages that join executions (workspace runs)


def _case_out(case: CaseResult) -> CaseOut:
    run: PhaseResult | None = case.run
    return CaseOut(
        index=case.index,
        verdict=case.verdict,
        status=run.status if run else None,
        stdout=run.stdout[:CASE_OUTPUT_CHARS] if run else "",
        stderr=run.stderr[:CASE_OUTPUT_CHARS] if run else "",
        exit_code=run.exit_code if run else None,
        signal=run.signal if run else None,
        cpu_ms=run.cpu_ms if run else None,
        wall_ms=run.wall_ms if run else None,
        memory_kb=run.memory_kb if run else None,
        message=run.message if run else None,
    )


def storable_text(text: str) -> str:
    """``text`` as Postgres can store it (``text`` and ``jsonb`` refuse NUL): each NUL becomes U+FFFD."""
    return text.replace(NUL, NUL_SHOWN_AS) if NUL in text else text


def _without_nul(value: Any) -> tuple[Any, bool]:
    """``value`` (JSON: dicts, lists, strings, numbers) with NUL replaced in every string; whether any was."""
    if isinstance(value, str):
        return (storable_text(value), True) if NUL in value else (value, False)
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key], replaced = _without_nul(item)
            changed = changed or replaced
        return out, changed
    if isinstance(value, list):
        items = [_without_nul(item) for item in value]
        return [item for item, _ in items], any(replaced for _, replaced in items)
    return value, False


def stored_result(result: Result) -> dict[str, Any]:
    """What the ``result`` column keeps: the run's fields, or a judgement with its deciding run; text
    with NUL bytes replaced (``nul_replaced`` says whether any were)."""
    stored, replaced = _without_nul(_result_fields(result))
    stored["nul_replaced"] = replaced
    return dict(stored)


def _result_fields(result: Result) -> dict[str, Any]:
    if isinstance(result, RunResult):
        return {"run": result.model_dump(mode="json"), "judge": None}
    runs = [c.run for c in result.cases if c.run is not None]
    failing = [c.run for c in result.cases if c.run is not None and c.verdict != Verdict.ACCEPTED]
    if result.compile is not None and (not runs or result.compile.status != Status.OK):
        top = RunResult(**result.compile.model_dump(), compile=result.compile)
    else:
        deciding = failing[0] if failing else runs[-1]
        top = RunResult(**deciding.model_dump(), compile=result.compile)
    judge = JudgeOut(
        verdict=result.verdict, passed=result.passed, total=result.total, cases=[_case_out(c) for c in result.cases]
    )
    return {"run": top.model_dump(mode="json"), "judge": judge.model_dump(mode="json")}


def execution_out(row: Record) -> ExecutionOut:
    stored = row["result"] or {}
    run = stored.get("run")
    fields: dict[str, Any] = {
        "status": None,
        "stdout": "",
        "stderr": "",
        "exit_code": None,
        "signal": None,
        "cpu_ms": None,
        "wall_ms": None,
        "memory_kb": None,
        "truncated": False,
        "message": None,
        "compile": None,
    }
    if run is not None:
        fields.update({k: run[k] for k in fields if k in run})
    return ExecutionOut(
        id=row["id"],
        language=row["language"],
        kind=row["kind"],
        state=row["state"],
        judge=stored.get("judge"),
        nul_replaced=stored.get("nul_replaced", False),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        **fields,
    )


class ExecutionHooks:
    """The runner's job hooks for executions: jobs without an ``execution_id`` are someone else's."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._live: dict[str, LiveOutput] = {}

    def output(self, job: Job, stream: str, data: bytes) -> None:
        """A workspace run's output as the program writes it: sent to its room in batches (see LiveOutput)."""
        topic = job.context.get("run_topic")
        if topic is None:
            return
        live = self._live.get(job.id)
        if live is None:
            ids = {"run_id": job.context.get("run_id", ""), "workspace_id": job.context.get("workspace_id", "")}
            live = self._live[job.id] = LiveOutput(self.core, topic, ids, _also_to(job.context))
        live.add(stream, data)

    async def started(self, job: Job) -> None:
        execution_id = job.context.get("execution_id")
        if execution_id is not None:
            await self.core.pool.execute(
                "UPDATE executions SET state = 'running', started_at = now() WHERE id = $1 AND state = 'queued'",
                uuid.UUID(execution_id),
            )

    async def finished(self, job: Job, result: Result) -> None:
        live = self._live.pop(job.id, None)
        if live is not None:
            await live.close()  # the last of the output goes out before run:finished
        execution_id = job.context.get("execution_id")
        if execution_id is not None:
            await finish(self.core, uuid.UUID(execution_id), result, job.context, streamed=True)


class LiveOutput:
    """Batches a run's output into ``run:output`` events: at most one per stream every ``INTERVAL_S``.

    A program printing line by line would otherwise send an event per line; text is decoded
    incrementally, so a character split between two reads arrives whole.
    """

    INTERVAL_S = 0.1

    def __init__(self, core: Core, topic: str, ids: dict[str, str], also_to: list[str] | None = None) -> None:
        self.core = core
        self.topic = topic
        self.ids = ids
        self.also_to = also_to or []
        self.pending: dict[str, list[str]] = {}
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")}
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Future[None] | None = None

    def add(self, stream: str, data: bytes) -> None:
        decoder = self.decoders.get(stream)
        if decoder is None:
            return
        text = storable_text(decoder.decode(data))  # as it will be stored, so that both read the same
        if text:
            self.pending.setdefault(stream, []).append(text)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.INTERVAL_S, self._flush_soon)

    def _flush_soon(self) -> None:
        self._timer = None
        previous = self._sending

        async def send() -> None:
            if previous is not None:
                await previous  # keep the batches in order
            await self._send()

        self._sending = asyncio.ensure_future(send())

    async def _send(self) -> None:
        pending, self.pending = self.pending, {}
        for stream in ("stdout", "stderr"):
            text = "".join(pending.get(stream, ()))
            if text:
                event = {
                    "event": RUN_OUTPUT_EVENT,
                    "data": {**self.ids, "stream": stream, "text": text},
                    "also_to": self.also_to,
                }
                try:
                    await self.core.bus.publish(self.topic, event)
                except Exception:
                    log.exception("could not send a run's output")

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None:
            await self._sending
        for stream, decoder in self.decoders.items():
            tail = storable_text(decoder.decode(b"", final=True))
            if tail:
                self.pending.setdefault(stream, []).append(tail)
        await self._send()


async def finish(
    core: Core,
    execution_id: uuid.UUID,
    result: Result,
    context: Mapping[str, str] | None = None,
    *,
    streamed: bool = False,
) -> None:
    """Store an execution's result and, once committed, push it to its owner (a finished one stays as is).

    ``context`` is the job's: a workspace run's carries where its output goes (``run_topic``); with
    ``streamed`` its stdout and stderr already went out live. If the database refuses the result, the
    execution is finished as an ``internal_error`` saying its result could not be stored, so that it
    never stays ``running`` (nor counts against its owner's limit of waiting executions).
    """
    try:
        await _store(core, execution_id, stored_result(result), context, streamed)
        return
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("could not store the result of execution %s; finishing it as an internal error", execution_id)
    failed = RunResult(
        **internal_error("the program ended, but its result could not be stored (the error is logged)").model_dump()
    )
    await _store(core, execution_id, stored_result(failed), context, streamed)


async def _store(
    core: Core, execution_id: uuid.UUID, stored: dict[str, Any], context: Mapping[str, str] | None, streamed: bool
) -> None:
    async with core.transaction() as tx:
        row = await tx.conn.fetchrow(
            f"""UPDATE executions SET state = 'finished', result = $2, finished_at = now(),
                       started_at = coalesce(started_at, now())
                WHERE id = $1 AND state <> 'finished' RETURNING {_COLUMNS}""",
            execution_id,
            stored,
        )
        if row is not None:
            out = execution_out(row)
            data = out.model_dump(mode="json")
            tx.publish(f"user:{row['user_id']}", {"event": FINISHED_EVENT, "data": data})
            if context is not None and "run_topic" in context:
                _publish_workspace_run(tx, out, context, streamed)


def _publish_workspace_run(tx: Tx, execution: ExecutionOut, context: Mapping[str, str], streamed: bool) -> None:
    """A workspace's Run (``collab_ide.runs``): its output and result go where its job context says
    (``run_topic``, and ``run_channel`` as the payload's ``also_to``).

    Here rather than in ``collab_ide`` because this runs wherever the job ran, a Celery worker included,
    which loads no more of studyhall than the executions.
    """
    topic = context["run_topic"]
    ids = {"run_id": context["run_id"], "workspace_id": context["workspace_id"]}
    outputs = []
    if execution.compile is not None and (execution.compile.stdout or execution.compile.stderr):
        outputs += [("compile", execution.compile.stdout + execution.compile.stderr)]
    if not streamed:  # a run that could not stream (the server stopped first, say) sends it all now
        outputs += [("stdout", execution.stdout), ("stderr", execution.stderr)]
    also_to = _also_to(context)
    for stream, text in outputs:
        if text:
            data = {**ids, "stream": stream, "text": text}
            tx.publish(topic, {"event": RUN_OUTPUT_EVENT, "data": data, "also_to": also_to})
    finished = {
        **ids,
        "entry": context["run_entry"],
        "user_id": context["user_id"],
        "execution": execution.model_dump(mode="json"),
    }
    tx.publish(topic, {"event": RUN_FINISHED_EVENT, "data": finished, "also_to": also_to})


def _also_to(context: Mapping[str, str]) -> list[str]:
    """The other Socket.IO rooms a run's events go to: the workspace's run channel (``collab_ide.follow``).

    Emitted together with ``run_topic``'s room, so a connection in both hears each event once. A job
    queued before run channels existed has none.
    """
    channel = context.get("run_channel")
    return [channel] if channel else []


# --- the service ---------------------------------------------------------------------------------

InFlightCounter = Callable[[Connection, uuid.UUID], Awaitable[int]]
"""Counts a user's sandbox jobs of one kind that are waiting or running (for the per-user limit)."""


async def executions_in_flight(conn: Connection, user_id: uuid.UUID) -> int:
    """The user's unfinished executions (one whose node died stops counting after ``STALE_AFTER_MIN``)."""
    count: int = await conn.fetchval(
        f"""SELECT count(*) FROM executions WHERE user_id = $1 AND state <> 'finished'
            AND created_at > now() - interval '{STALE_AFTER_MIN} minutes'""",
        user_id,
    )
    return count


class Executions:
    """Executions of one app: its runner (in-process pool or Celery) and the use cases."""

    def __init__(self, core: Core, runner: Runner, settings: Settings) -> None:
        self.core = core
        self.runner = runner
        self.settings = settings
        self._local: dict[uuid.UUID, dict[str, str]] = {}  # this process's unfinished jobs, with their context
        self._in_flight: list[InFlightCounter] = [executions_in_flight]

    async def create(
        self,
        user: Principal,
        body: ExecutionIn,
        wait: bool,
        link: Callable[[Connection, uuid.UUID], Awaitable[None]] | None = None,
        context: dict[str, str] | None = None,
        interactive: bool = False,
    ) -> ExecutionOut:
        """Admit and start an execution; ``link`` runs in the transaction that stores it (a workspace run
        records itself there, so it exists before the program can finish). ``interactive``: a run whose
        stdin stays open for :meth:`send_input` (a workspace's console)."""
        request = body.to_request()
        if interactive and isinstance(request, RunRequest):
            request = request.model_copy(update={"interactive": True})
        try:
            self.runner.validate(request)
            await self.runner.ready()
        except InvalidRequest as exc:
            raise invalid(str(exc)) from None
        except SandboxUnavailable as exc:
            raise AppError(
                ErrorCode.UNAVAILABLE, f"code execution is unavailable: {exc}", {"retry_after_s": 60}
            ) from None
        kind = "judge" if isinstance(request, JudgeRequest) else "run"
        execution_id = new_id()
        async with self.core.transaction() as tx:
            await self.admit(tx.conn, user.id)
            await tx.conn.execute(
                "INSERT INTO executions (id, user_id, language, kind) VALUES ($1, $2, $3, $4)",
                execution_id,
                user.id,
                request.language,
                kind,
            )
            if link is not None:
                await link(tx.conn, execution_id)
        job_context = {**(context or {}), "execution_id": str(execution_id), "user_id": str(user.id)}
        try:
            # The job is named by its execution, so that input typed into the run finds it (send_input).
            submitted = await self.runner.submit(request, job_context, job_id=str(execution_id))
        except (QueueFull, SandboxUnavailable, InvalidRequest) as exc:
            await self.core.pool.execute("DELETE FROM executions WHERE id = $1", execution_id)
            if isinstance(exc, QueueFull):
                raise AppError(ErrorCode.RATE_LIMITED, str(exc), {"retry_after_s": 1}) from None
            if isinstance(exc, InvalidRequest):
                raise invalid(str(exc)) from None
            raise AppError(
                ErrorCode.UNAVAILABLE, f"code execution is unavailable: {exc}", {"retry_after_s": 60}
            ) from None
        self._local[execution_id] = job_context
        submitted.result.add_done_callback(lambda done: self._settled(execution_id, done))
        if wait:
            try:
                async with asyncio.timeout(self.settings.sandbox_wait_timeout_s):
                    await asyncio.shield(submitted.result)
            except TimeoutError:
                pass  # answered as still queued or running
            except Exception:
                log.exception("execution %s failed in the runner", execution_id)
        return await self.get(user, execution_id)

    async def send_input(self, execution_id: uuid.UUID, data: bytes, eof: bool) -> None:
        """Feed an interactive run's stdin (the caller checked who may): ``conflict`` once it has finished
        or its input is closed, ``payload_too_large`` past ``run_input_total_bytes``."""
        row = await self.core.pool.fetchrow("SELECT kind, state FROM executions WHERE id = $1", execution_id)
        if row is None:
            raise not_found("execution")
        if row["state"] == "finished":
            raise conflict("the run has finished; its program reads no more input")
        try:
            await self.runner.send_input(str(execution_id), data, eof, self.settings.run_input_total_bytes)
        except InputRefused as exc:
            if exc.reason == InputRefusal.TOO_LARGE:
                raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, str(exc)) from None
            if exc.reason == InputRefusal.CLOSED:
                raise conflict(str(exc)) from None
            raise conflict("the run has finished, or was not started with interactive input") from None
        except SandboxUnavailable as exc:
            raise AppError(ErrorCode.UNAVAILABLE, str(exc), {"retry_after_s": 1}) from None

    def count_in_flight(self, counter: InFlightCounter) -> None:
        """Count another kind of sandbox job (contest submissions) against ``STUDYHALL_SANDBOX_PER_USER``."""
        self._in_flight.append(counter)

    async def admit(self, conn: Connection, user_id: uuid.UUID) -> None:
        """In the caller's transaction, before it stores a new job: 429 ``rate_limited`` if the user already
        has ``sandbox_per_user`` jobs of any kind waiting or running. The user's lock, held until commit,
        keeps concurrent requests from both passing the count."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1::text))", str(user_id))
        waiting = 0
        for counter in self._in_flight:
            waiting += await counter(conn, user_id)
        if waiting >= self.settings.sandbox_per_user:
            raise AppError(
                ErrorCode.RATE_LIMITED,
                f"you already have {waiting} programs waiting or running; wait for them to finish",
                {"retry_after_s": 1},
            )

    def _settled(self, execution_id: uuid.UUID, done: asyncio.Future[Result]) -> None:
        # With a result, the hooks have stored it; without one (shutdown), close() will.
        if not done.cancelled() and done.exception() is None:
            self._local.pop(execution_id, None)

    async def get(self, user: Principal, execution_id: uuid.UUID) -> ExecutionOut:
        row = await self.core.pool.fetchrow(f"SELECT {_COLUMNS} FROM executions WHERE id = $1", execution_id)
        if row is None or (row["user_id"] != user.id and not user.is_admin):
            raise not_found("execution")
        return execution_out(row)

    async def close(self) -> None:
        """Finish this process's executions that will never get a result (the pool is shutting down)."""
        pending = list(self._local.items())
        self._local.clear()
        if not pending or self.settings.sandbox_on_celery:
            return  # Celery workers finish their jobs whatever happens to this node
        result = RunResult(**internal_error("the server shut down before the program finished").model_dump())
        for execution_id, context in pending:
            try:
                await finish(self.core, execution_id, result, context)
            except Exception:
                log.exception("could not finish execution %s on shutdown", execution_id)


EXECUTIONS = web.AppKey("executions", Executions)
SESSION_KEY = "core_api.executions"  # the same service in Socket.IO handlers: ``call.session[SESSION_KEY]``

# --- REST ----------------------------------------------------------------------------------------


@api.route(
    "POST",
    "/executions",
    summary="Run a program in the sandbox (or judge it against test cases)",
    tag=TAG,
    body=ExecutionIn,
    query=ExecutionQuery,
    response=ExecutionOut,
    status=202,
    errors=[429, 503],
    extra_statuses={200: "Finished (with `?wait=true`)"},
)
async def post_execution(call: Call) -> Reply:
    execution = await call.request.app[EXECUTIONS].create(call.me, call.body, call.query.wait)
    return Reply(execution, 200 if execution.state == "finished" else 202)


@api.route("GET", "/executions/{execution_id}", summary="One of your executions", tag=TAG, response=ExecutionOut)
async def get_execution(call: Call) -> ExecutionOut:
    return await call.request.app[EXECUTIONS].get(call.me, call.params["execution_id"])


@api.route(
    "GET", "/languages", summary="The languages programs can be written in", tag=TAG, response=LanguagesOut, auth=False
)
async def get_languages(call: Call) -> LanguagesOut:
    return LanguagesOut(items=await call.request.app[EXECUTIONS].runner.languages())
