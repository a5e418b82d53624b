"""Background jobs with progress: the ``jobs`` table, the runner, and ``GET/DELETE /api/v1/jobs/{id}``.

A job is a row (kind, params, state, progress 0-1, stage, error, result). Whoever runs it first *claims*
it in Postgres: the claim succeeds for a queued job, or for a running one whose lease has expired (its
runner died); so a job never runs twice at once. The runner renews the lease with every progress report,
and a report that finds the job no longer its own (cancelled, or taken over) stops the work. A kind's
work writes only under its job id (``outputs/<job id>/``, emptied at each attempt) and commits its
effect together with ``succeeded`` in one transaction, only if it still holds the claim: a retry after a
crash leaves no duplicate output (idempotent by job id). After ``STUDYHALL_MEDIA_JOB_ATTEMPTS`` claims a
job fails.

Progress goes to the owner live as ``job:progress`` (the job as ``GET /jobs/{id}`` shows it) on their
``user:<id>`` Socket.IO room, at most every half second and at every change of stage or state.

Runs in-process: :class:`JobRunner` with ``STUDYHALL_MEDIA_WORKERS`` at once per node, fed when a job is
queued and by a sweep that picks up jobs left queued or abandoned (every ``STUDYHALL_MEDIA_SWEEP_S``).
Scaled, the same :func:`run_job` runs on Celery workers (``studyhall worker -Q media``), to which the nodes'
:class:`~media.distributed.CeleryJobs` send the jobs instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from core_api.context import Core, core_of
from core_api.db import Connection, Record
from core_api.errors import AppError, ErrorCode, conflict, not_found
from core_api.http import Api, Call, Principal
from media.storage import Storage

log = logging.getLogger(__name__)

PROGRESS_EVENT = "job:progress"
REPORT_EVERY_S = 0.5

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE = ("queued", "running")


class JobOut(BaseModel):
    id: uuid.UUID
    kind: str
    state: JobState
    progress: float = Field(ge=0, le=1, description="0 to 1.")
    stage: str | None = Field(description="What the job is doing (`probe`, `transcode`, `poster`, ...).")
    error: str | None = Field(description="Why the job failed (state `failed`).")
    result: dict[str, Any] | None = Field(description="What the job made (state `succeeded`).")
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def job_out(row: Record) -> JobOut:
    return JobOut(**{k: row[k] for k in JobOut.model_fields})


class JobFailed(Exception):
    """The work cannot succeed (bad input): the job fails with this message, without another attempt."""


class Lost(Exception):
    """The job is no longer this runner's (cancelled, or its lease expired and another took it)."""


@dataclass
class Finish:
    """What a job's work returns: its result, and the change to commit with ``succeeded``."""

    result: dict[str, Any]
    apply: Callable[[Connection], Awaitable[None]] | None = None
    after: Callable[[], Awaitable[None]] | None = None  # once committed (remove what is no longer needed)


@dataclass
class JobContext:
    """What a running job sees: its row, the services, and :meth:`report`."""

    job: Record
    core: Core
    storage: Storage
    runner_id: uuid.UUID
    _last: float = field(default=0.0)
    _stage: str | None = field(default=None)

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(str(self.job["id"]))

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.job["params"])

    @contextlib.asynccontextmanager
    async def upload_copy(self, upload_id: uuid.UUID) -> AsyncIterator[Path]:
        """A local path to the job's upload: the upload itself (local disk) or a copy from the S3 bucket in the
        job's scratch directory, removed when the block ends. :class:`JobFailed` if the upload is gone."""
        scratch = self.storage.scratch_dir(self.id)
        try:
            try:
                path = await self.storage.local_upload(upload_id, scratch)
            except FileNotFoundError:
                raise JobFailed("the upload is gone (deleted or expired) before it was processed") from None
            yield path
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def report(self, progress: float, stage: str) -> None:
        """Record progress (renewing the claim) and tell the owner; raises :class:`Lost` if not ours."""
        now = time.monotonic()
        if stage == self._stage and now - self._last < REPORT_EVERY_S:
            return
        self._last, self._stage = now, stage
        row = await self.core.pool.fetchrow(
            """UPDATE jobs SET progress = $3, stage = $4, lease_until = now() + make_interval(secs => $5)
               WHERE id = $1 AND claimed_by = $2 AND state = 'running' RETURNING *""",
            self.id, self.runner_id, min(max(progress, 0.0), 1.0), stage, self.core.settings.media_job_lease_s,
        )  # fmt: skip
        if row is None:
            raise Lost
        await publish(self.core, row)


Work = Callable[[JobContext], Awaitable[Finish]]


async def send_output(request: web.Request, job_id: uuid.UUID, name: str, headers: dict[str, str],
                      what: str) -> web.StreamResponse:  # fmt: skip
    """A file a job made (``outputs/<job id>/<name>``), after the caller's access check: from the media directory
    (behind nginx, nginx sends it) or the S3 bucket (streamed or redirected); 404 naming ``what`` if it is gone."""
    try:
        return await request.app[JOBS].storage.send(request, f"outputs/{job_id}/{name}", headers)
    except FileNotFoundError:
        raise not_found(what) from None


async def publish(core: Core, row: Record) -> None:
    data = job_out(row).model_dump(mode="json")
    await core.bus.publish(f"user:{row['owner_id']}", {"event": PROGRESS_EVENT, "data": data})


async def enqueue(conn: Connection, kind: str, owner: uuid.UUID, params: dict[str, Any]) -> Record:
    row = await conn.fetchrow(
        "INSERT INTO jobs (id, kind, owner_id, params) VALUES ($1, $2, $3, $4) RETURNING *",
        uuid.uuid4(), kind, owner, params,
    )  # fmt: skip
    assert row is not None
    return row


async def run_job(
    core: Core, storage: Storage, kinds: dict[str, Work], job_id: uuid.UUID, runner_id: uuid.UUID
) -> None:
    """Claim and run one job (a no-op if someone else holds it or it is over). The in-process runner and a
    Celery task would both call this."""
    settings = core.settings
    row = await core.pool.fetchrow(
        """UPDATE jobs SET state = 'running', claimed_by = $2, lease_until = now() + make_interval(secs => $3),
                  attempts = attempts + 1, started_at = coalesce(started_at, now()), stage = 'starting'
           WHERE id = $1 AND (state = 'queued' OR (state = 'running' AND lease_until < now())) RETURNING *""",
        job_id, runner_id, settings.media_job_lease_s,
    )  # fmt: skip
    if row is None:
        return
    if row["attempts"] > settings.media_job_attempts:
        await _end(core, row, runner_id, "failed", error=f"gave up after {settings.media_job_attempts} attempts")
        return
    await publish(core, row)
    work = kinds.get(row["kind"])
    ctx = JobContext(row, core, storage, runner_id)
    try:
        if work is None:
            raise JobFailed(f"no handler for jobs of kind {row['kind']!r}")
        finish = await work(ctx)
    except JobFailed as exc:
        await storage.remove_output(ctx.id)
        await _end(core, row, runner_id, "failed", error=str(exc))
        return
    except Lost:
        log.info("job %s is no longer ours (cancelled or taken over)", job_id)
        await _cleanup_if_over(core, storage, ctx.id)
        return
    except asyncio.CancelledError:
        await asyncio.shield(_cleanup_if_over(core, storage, ctx.id))
        raise
    except Exception:
        # Unexpected: logged; the claim lapses and the sweep tries again, up to the attempts allowed.
        log.exception("job %s (%s) failed unexpectedly; it will be tried again", job_id, row["kind"])
        await core.pool.execute(
            "UPDATE jobs SET lease_until = now() WHERE id = $1 AND claimed_by = $2 AND state = 'running'",
            job_id, runner_id,
        )  # fmt: skip
        return
    try:
        ended = await _end(core, row, runner_id, "succeeded", result=finish.result, apply=finish.apply)
    except JobFailed as exc:  # what the job was for is gone (a deleted lecture): rolled back, and failed
        await storage.remove_output(ctx.id)
        await _end(core, row, runner_id, "failed", error=str(exc))
        return
    if ended is None:
        await _cleanup_if_over(core, storage, ctx.id)
    elif finish.after is not None:
        await finish.after()


async def _end(
    core: Core, row: Record, runner_id: uuid.UUID, state: JobState, *, error: str | None = None,
    result: dict[str, Any] | None = None, apply: Callable[[Connection], Awaitable[None]] | None = None,
) -> Record | None:  # fmt: skip
    async with core.transaction() as tx:
        ended = await tx.conn.fetchrow(
            """UPDATE jobs SET state = $3, error = $4, result = $5, finished_at = now(), lease_until = NULL,
                      progress = CASE WHEN $3 = 'succeeded' THEN 1 ELSE progress END,
                      stage = CASE WHEN $3 = 'succeeded' THEN 'done' ELSE stage END
               WHERE id = $1 AND claimed_by = $2 AND state = 'running' RETURNING *""",
            row["id"], runner_id, state, error, result,
        )  # fmt: skip
        if ended is None:
            return None
        if apply is not None:
            await apply(tx.conn)
        tx.publish(
            f"user:{ended['owner_id']}", {"event": PROGRESS_EVENT, "data": job_out(ended).model_dump(mode="json")}
        )
    return ended


async def _cleanup_if_over(core: Core, storage: Storage, job_id: uuid.UUID) -> None:
    """A cancelled (or failed) job's partial output goes; a job another runner took over keeps its directory."""
    state = await core.pool.fetchval("SELECT state FROM jobs WHERE id = $1", job_id)
    if state in ("cancelled", "failed", None):
        await storage.remove_output(job_id)


class JobRunner:
    """Runs jobs in this process, ``workers`` at once (``STUDYHALL_MEDIA_WORKERS``)."""

    def __init__(self, core: Core, storage: Storage, kinds: dict[str, Work]) -> None:
        self.core = core
        self.storage = storage
        self.kinds = kinds
        self.id = uuid.uuid4()
        self._queue: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        self._waiting: set[uuid.UUID] = set()
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        workers = self.core.settings.media_workers
        self._tasks = [asyncio.create_task(self._work()) for _ in range(workers)]
        self._tasks.append(asyncio.create_task(self._sweep()))

    def submit(self, job_id: uuid.UUID) -> None:
        if job_id not in self._waiting and job_id not in self._running:
            self._waiting.add(job_id)
            self._queue.put_nowait(job_id)

    def cancel(self, job_id: uuid.UUID) -> None:
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()

    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            self._waiting.discard(job_id)
            task = asyncio.create_task(run_job(self.core, self.storage, self.kinds, job_id, self.id))
            self._running[job_id] = task
            try:
                await task  # cancelling this worker cancels the job too
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # this worker is stopping (the app is)
                # only the job was cancelled (DELETE /jobs/{id}): take the next one
            except Exception:
                log.exception("job %s crashed its runner", job_id)
            finally:
                self._running.pop(job_id, None)

    async def _sweep(self) -> None:
        while True:
            try:
                rows = await self.core.pool.fetch(
                    """SELECT id FROM jobs WHERE state = 'queued'
                          OR (state = 'running' AND lease_until < now()) ORDER BY created_at LIMIT 100"""
                )
                for row in rows:
                    self.submit(row["id"])
            except Exception:
                log.exception("media: the job sweep failed; trying again later")
            await asyncio.sleep(self.core.settings.media_sweep_s)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # What this node was running goes back to the queue at once, for another node or the next start
        # (if the database cannot be reached now, the jobs' leases run out and the sweep retries them).
        try:
            await self.core.pool.execute(
                """UPDATE jobs SET state = 'queued', claimed_by = NULL, lease_until = NULL
                   WHERE claimed_by = $1 AND state = 'running'""",
                self.id,
            )
        except Exception as exc:
            log.warning("media: could not hand this node's running jobs back to the queue: %s", exc)


JOBS = web.AppKey("media_jobs", JobRunner)


# --- REST -------------------------------------------------------------------------------------------

api = Api()
TAG = "jobs"


async def owned_job(conn: Connection, user: Principal, job_id: uuid.UUID) -> Record:
    row = await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
    if row is None or (row["owner_id"] != user.id and not user.is_admin):
        raise not_found("job")
    return row


@api.route(
    "GET",
    "/jobs/{job_id}",
    summary="A background job's state and progress",
    tag=TAG,
    description="The job's owner (who started it) and admins; anyone else gets 404. The owner is also sent "
    "`job:progress` (this same object) over Socket.IO as the job moves.",
    response=JobOut,
)
async def get_job(call: Call) -> JobOut:
    async with core_of(call).pool.acquire() as conn:
        return job_out(await owned_job(conn, call.me, call.params["job_id"]))


@api.route(
    "DELETE",
    "/jobs/{job_id}",
    summary="Cancel a job",
    tag=TAG,
    description="Its owner or an admin. A queued or running job becomes `cancelled` (a running transcode is "
    "stopped and its partial output removed); a finished job gives 409.",
    response=JobOut,
    errors=(409,),
)
async def cancel_job(call: Call) -> JobOut:
    core = core_of(call)
    async with core.transaction() as tx:
        row = await owned_job(tx.conn, call.me, call.params["job_id"])
        if row["state"] not in ACTIVE:
            raise conflict(f"the job is already {row['state']}")
        row = await tx.conn.fetchrow(
            """UPDATE jobs SET state = 'cancelled', finished_at = now(), lease_until = NULL
               WHERE id = $1 RETURNING *""",
            row["id"],
        )
        assert row is not None
        tx.publish(f"user:{row['owner_id']}", {"event": PROGRESS_EVENT, "data": job_out(row).model_dump(mode="json")})
    runner = call.request.app.get(JOBS)
    if runner is not None:
        runner.cancel(row["id"])
    return job_out(row)


def too_many(active: int, limit: int) -> AppError:
    return AppError(ErrorCode.RATE_LIMITED, f"you have {active} jobs queued or running (at most {limit}): wait for one")
