"""Where sandbox jobs run: the app's runner, and the ``studyhall worker`` process (Celery).

Chosen once at start-up from the settings (``STUDYHALL_SANDBOX_EXECUTOR``):

- in-process (the default without Redis): the node's own :class:`~sandbox.runner.LocalRunner`, whose
  job hooks store results and publish ``execution:finished`` on the node's bus after commit;
- Celery (the default with ``STUDYHALL_REDIS_URL``): the node sends jobs to Redis with a
  :class:`~sandbox.distributed.CeleryRunner`; ``studyhall worker`` processes run them on the same
  ``LocalRunner`` with the same hooks, their bus pushing to Socket.IO rooms through the write-only
  Redis manager (:func:`realtime.sockets.external_emitter`) instead of a server.

Either way a machine that cannot sandbox says so at start-up (and in ``/readyz``), and runs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from core_api.celery_worker import serve_worker
from core_api.context import CORE, Bus, Core, Subscriber
from core_api.db import Pool, create_pool
from core_api.executions import (
    EXECUTIONS,
    SESSION_KEY,
    ExecutionHooks,
    Executions,
    run_limits,
    sandbox_config,
)
from core_api.settings import Settings
from realtime.sockets import SOCKETS, external_emitter, recipients
from sandbox import host
from sandbox.distributed import QUEUE, CeleryRunner, WorkerHost, celery_app
from sandbox.runner import JobHooks, LocalRunner, Runner

log = logging.getLogger(__name__)


async def open_runner(settings: Settings, hooks: JobHooks) -> Runner:
    """The runner this node's executions go to, already open."""
    if settings.sandbox_on_celery:
        assert settings.redis_url is not None
        celery = CeleryRunner(settings.redis_url.get_secret_value(), settings.sandbox_queue, run_limits(settings))
        await celery.open()
        log.info("sandbox: programs run on Celery workers (queue %s on Redis)", QUEUE)
        return celery
    local = LocalRunner(sandbox_config(settings), hooks)
    if local.unavailable is None:
        try:  # the pool itself opens on the first run; its user is made now, as the embedded Postgres's is
            await asyncio.to_thread(host.ensure_user, settings.sandbox_user)
        except host.HostError as exc:
            local.fail(str(exc))
    if local.unavailable is not None:
        log.error("sandbox unavailable, code execution is disabled: %s", local.unavailable)
    else:
        log.info(
            "sandbox: programs run in this process (bubblewrap %s, cgroup v%s, %d at once, %d may wait)",
            local.probe.bwrap, local.probe.cgroup_version, settings.sandbox_workers, settings.sandbox_queue,
        )  # fmt: skip
    return local


async def run_sandbox(settings: Settings, app: web.Application) -> AsyncIterator[None]:
    """The app's executions service for as long as the app runs (a ``cleanup_ctx``)."""
    core = app[CORE]
    runner = await open_runner(settings, ExecutionHooks(core))
    service = Executions(core, runner, settings)
    app[EXECUTIONS] = service
    app[SOCKETS].services[SESSION_KEY] = service  # for event handlers (the editor's Run, contests)
    try:
        yield
    finally:
        await runner.close()  # stops this process's runs ...
        await service.close()  # ... and finishes their executions as failed


# --- the worker process ----------------------------------------------------------------------------


def _pusher(emitter: Any) -> Subscriber:
    """The worker's bus subscriber: ``{"event", "data"}`` events on ``user:``/``room:`` topics go to those
    Socket.IO rooms (and their ``also_to`` run channels) on every node, through the write-only manager
    (the worker has no server of its own); notifications to their user's room as ``notification:new``."""

    async def push(topic: str, payload: dict[str, Any]) -> None:
        event, data = payload.get("event"), payload.get("data")
        if topic.startswith(("user:", "room:")) and isinstance(event, str) and isinstance(data, dict):
            await emitter.emit(event, data, room=recipients(topic, payload))
        elif topic.startswith("user:") and payload.get("type") == "notification":  # as a node's SocketServer does
            await emitter.emit("notification:new", payload["notification"], room=topic)

    return push


def run_worker(settings: Settings, concurrency: int) -> int:
    """``studyhall worker``: run sandbox jobs from Redis until stopped (SIGTERM: finish the running ones)."""
    if settings.redis_url is None or settings.database_url is None:
        print("studyhall worker needs STUDYHALL_REDIS_URL and STUDYHALL_DATABASE_URL", file=sys.stderr)
        return 2
    broker = settings.redis_url.get_secret_value()
    dsn = settings.database_url.get_secret_value()
    settings = settings.model_copy(update={"sandbox_workers": concurrency, "sandbox_queue": 0})
    resources: dict[str, Any] = {}

    async def setup() -> LocalRunner:
        pool: Pool = await create_pool(dsn, min_size=1, max_size=max(2, concurrency))
        emitter = external_emitter(settings)
        bus = Bus()
        bus.subscribe(_pusher(emitter))
        resources.update(pool=pool, emitter=emitter)
        runner = LocalRunner(sandbox_config(settings), ExecutionHooks(Core(settings=settings, pool=pool, bus=bus)))
        if runner.unavailable is not None:
            raise RuntimeError(f"this machine cannot run sandboxes: {runner.unavailable}")
        return runner

    async def teardown() -> None:
        if "pool" in resources:
            await resources["pool"].close()
        redis = getattr(resources.get("emitter"), "redis", None)
        if redis is not None:
            await redis.aclose()

    host = WorkerHost(broker, setup, teardown)
    ready = f"studyhall worker ready: {concurrency} at once, queue {QUEUE}"
    return serve_worker(
        host,
        celery_app(broker),
        queue=QUEUE,
        name="sandbox",
        concurrency=concurrency,
        loglevel=settings.log_level,
        ready=ready,
    )
