"""Media jobs on Celery workers: the scaled mode's :class:`CeleryJobs` (on nodes) and ``studyhall worker -Q media``.

Jobs are rows of the ``jobs`` table either way (:mod:`media.jobs`); only who runs :func:`~media.jobs.run_job`
changes. With ``STUDYHALL_REDIS_URL`` (or ``STUDYHALL_MEDIA_EXECUTOR=celery``) a node runs none itself: it sends
each queued job's id as a Celery task to the ``studyhall-media`` queue, and ``studyhall worker -Q media``
processes run it, each on an asyncio loop of its own with the same job kinds, storage and code as the in-process
runner.

- **Acks late**: a task is acknowledged when the job's run ends, so a worker killed mid-job leaves its message
  on the broker, handed to another worker after ``STUDYHALL_MEDIA_CELERY_VISIBILITY_S`` (Redis's visibility
  timeout). One message at a time per worker thread (``worker_prefetch_multiplier=1``).
- **Never twice at once**: whoever gets a task must still *claim* the job in Postgres (``run_job``); a second
  delivery while the first runs, or after the job ended, does nothing.
- **Retried sooner**: the nodes' sweep (every ``STUDYHALL_MEDIA_SWEEP_S``) sends a job again once its lease has
  run out (its worker died), once per attempt; and a queued job whose message was lost, once per visibility
  timeout. Redis keys ``studyhall-media-sent:<job>`` and ``studyhall-media-retry:<job>:<attempt>`` keep the
  nodes from sending the same thing twice.
- **Cancel**: ``DELETE /jobs/{id}`` marks the job; its worker stops it at the next progress report.
- **Progress and notifications** reach users through the write-only Socket.IO manager (as the sandbox
  worker's do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from celery import Celery
from redis.exceptions import RedisError

from core_api.celery_worker import serve_worker
from core_api.context import Bus, Core
from core_api.db import Pool, create_pool
from core_api.settings import Settings
from media.jobs import JobRunner, Work, run_job
from media.storage import Storage

log = logging.getLogger(__name__)

TASK = "studyhall.media.run_job"
QUEUE = "studyhall-media"
SENT_KEY = "studyhall-media-sent:{}"
RETRY_KEY = "studyhall-media-retry:{}:{}"
T = TypeVar("T")


def celery_app(broker_url: str, visibility_s: float) -> Celery:
    """The Celery application of media jobs (JSON only, no result backend, acks late)."""
    app = Celery("studyhall-media", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,  # acknowledged when the run ends: a worker dying mid-job leaves the message
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": visibility_s},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
    )
    return app


class CeleryJobs(JobRunner):
    """A node's :class:`~media.jobs.JobRunner` when media jobs run on Celery workers: it runs nothing itself,
    it sends jobs to the ``studyhall-media`` queue (when queued, and again from the sweep as above)."""

    def __init__(self, core: Core, storage: Storage, kinds: dict[str, Work], broker_url: str) -> None:
        super().__init__(core, storage, kinds)
        self.app = celery_app(broker_url, core.settings.media_celery_visibility_s)
        self._redis = aioredis.Redis.from_url(broker_url)
        self._sending: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sweep_sends())]

    def submit(self, job_id: uuid.UUID) -> None:
        task = asyncio.create_task(self._send(job_id, SENT_KEY.format(job_id), self._visibility))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    @property
    def _visibility(self) -> int:
        return int(self.core.settings.media_celery_visibility_s)

    async def _send(self, job_id: uuid.UUID, key: str, ttl: int) -> None:
        try:
            if not await self._redis.set(key, b"1", nx=True, ex=ttl):
                return  # sent already (by this node or another)
            await asyncio.to_thread(self.app.send_task, TASK, args=[str(job_id)], queue=QUEUE)
        except Exception as exc:  # the sweep sends it once the broker is back
            log.warning("media: could not queue job %s on Celery: %s", job_id, exc)
            with contextlib.suppress(OSError, RedisError):
                await self._redis.delete(key)

    async def _sweep_sends(self) -> None:
        while True:
            try:
                rows = await self.core.pool.fetch(
                    """SELECT id, state, attempts FROM jobs WHERE state = 'queued'
                          OR (state = 'running' AND lease_until < now()) ORDER BY created_at LIMIT 100"""
                )
                for row in rows:
                    if row["state"] == "queued":
                        await self._send(row["id"], SENT_KEY.format(row["id"]), self._visibility)
                    else:  # its worker died: once per attempt
                        await self._send(row["id"], RETRY_KEY.format(row["id"], row["attempts"]), 86400)
            except Exception:
                log.exception("media: the job sweep failed; trying again later")
            await asyncio.sleep(self.core.settings.media_sweep_s)

    def cancel(self, job_id: uuid.UUID) -> None:
        """Nothing to do here: the worker running it stops at its next progress report."""

    async def close(self) -> None:
        for task in [*self._tasks, *self._sending]:
            task.cancel()
        for task in [*self._tasks, *self._sending]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._redis.aclose()


class MediaWorkerHost:
    """The worker side: one asyncio loop in a thread; Celery's threads hand it job ids to run."""

    def __init__(self, settings: Settings, concurrency: int) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.runner_id = uuid.uuid4()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="media-jobs", daemon=True)
        self.core: Core | None = None
        self.storage: Storage | None = None
        self.kinds: dict[str, Work] = {}
        self._resources: dict[str, Any] = {}

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def start(self) -> None:
        self._thread.start()
        self._call(self._setup())

    async def _setup(self) -> None:
        from media.wiring import job_kinds, open_storage
        from realtime.jobs import _pusher
        from realtime.sockets import external_emitter

        assert self.settings.database_url is not None
        pool: Pool = await create_pool(
            self.settings.database_url.get_secret_value(), min_size=1, max_size=max(2, self.concurrency + 1)
        )
        emitter = external_emitter(self.settings)
        bus = Bus()
        bus.subscribe(_pusher(emitter))
        self._resources.update(pool=pool, emitter=emitter)
        self.core = Core(settings=self.settings, pool=pool, bus=bus)
        self.storage = open_storage(self.settings)
        self.kinds = job_kinds()

    def execute(self, job_id: str) -> None:
        """Run one job (called by a Celery thread; returns when its run ends, and Celery then acks it)."""
        assert self.core is not None
        assert self.storage is not None
        self._call(run_job(self.core, self.storage, self.kinds, uuid.UUID(job_id), self.runner_id))

    def stop(self) -> None:
        async def close() -> None:
            if self.storage is not None:
                await self.storage.close()
            if "pool" in self._resources:
                await self._resources["pool"].close()
            redis = getattr(self._resources.get("emitter"), "redis", None)
            if redis is not None:
                await redis.aclose()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        self.loop.close()

    def register(self, app: Celery) -> None:
        @app.task(name=TASK, ignore_result=True)  # type: ignore[untyped-decorator]
        def execute(job_id: str) -> None:
            self.execute(job_id)


def run_media_worker(settings: Settings, concurrency: int) -> int:
    """``studyhall worker -Q media``: run media jobs from Redis until stopped (SIGTERM: finish the running ones)."""
    if settings.redis_url is None or settings.database_url is None:
        print("studyhall worker needs STUDYHALL_REDIS_URL and STUDYHALL_DATABASE_URL", file=sys.stderr)
        return 2
    broker = settings.redis_url.get_secret_value()
    host = MediaWorkerHost(settings, concurrency)
    app = celery_app(broker, settings.media_celery_visibility_s)
    ready = f"studyhall worker ready: {concurrency} at once, queue {QUEUE}, runner {host.runner_id}"
    return serve_worker(
        host, app, queue=QUEUE, name="media", concurrency=concurrency, loglevel=settings.log_level, ready=ready
    )
