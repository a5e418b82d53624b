"""Sandbox jobs on Celery workers: the scaled mode's :class:`CeleryRunner` and its :class:`WorkerHost`.

When studyhall runs as several nodes, programs run on ``studyhall worker`` processes instead of the
nodes. Both sides speak through Redis:

- a node's :class:`CeleryRunner` checks the queue's length (:class:`~sandbox.runner.QueueFull` past
  the limit), sends the job as a Celery task to the ``studyhall-sandbox`` queue and waits for its
  result on the Redis channel ``studyhall-sandbox-results``, to which it subscribed when it opened;
- a worker's :class:`WorkerHost` runs each task on the same :class:`~sandbox.runner.LocalRunner` the
  in-process mode uses (one asyncio loop in its own thread, Celery's thread pool feeding it), calls
  the job hooks there (which store the result and push it to users), then publishes the result.

Celery keeps no results (``task_ignore_result``); the result channel carries them to whoever waits.
A node that restarts stops waiting, but the worker's hooks still store and push the result.

Input typed into an interactive run (:mod:`sandbox.console`) goes the same way, on any node: the node
appends it to the job's Redis list ``studyhall-sandbox-input:<job id>`` (counting the bytes against the
run's limit in Redis, so that several nodes together cannot pass it), and the worker running the job
pops from that list into the run's feed until the job ends. Input sent before a worker took the job
waits in the list; the keys expire an hour after the last input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from celery import Celery
from redis.exceptions import RedisError

from sandbox.console import InputFeed, InputRefusal, InputRefused
from sandbox.languages import LanguageInfo, installed_languages
from sandbox.models import JudgeRequest, JudgeResult, Limits, RunRequest, RunResult
from sandbox.runner import (
    RUN_LIMITS,
    Job,
    LocalRunner,
    QueueFull,
    Request,
    Result,
    SandboxUnavailable,
    Submitted,
    WaitForResult,
    failed_result,
    validate,
)

log = logging.getLogger(__name__)

TASK = "studyhall.sandbox.execute"
QUEUE = "studyhall-sandbox"
RESULTS_CHANNEL = "studyhall-sandbox-results"
INPUT_KEY = "studyhall-sandbox-input:{}"
INPUT_TTL_S = 3600
_DATA, _EOF = b"D", b"E"  # an input list item: one of these, then the bytes
T = TypeVar("T")


def celery_app(broker_url: str) -> Celery:
    """The Celery application of sandbox jobs (JSON only, no result backend, one task fetched at a time)."""
    app = Celery("studyhall", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=False,  # a job is run at most once: a program is not re-run behind its author's back
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        broker_connection_retry_on_startup=True,
    )
    return app


def encode_job(job: Job) -> dict[str, Any]:
    kind = "judge" if isinstance(job.request, JudgeRequest) else "run"
    return {"id": job.id, "kind": kind, "request": job.request.model_dump(mode="json"), "context": job.context}


def decode_job(data: dict[str, Any]) -> Job:
    model = JudgeRequest if data["kind"] == "judge" else RunRequest
    return Job(id=data["id"], request=model.model_validate(data["request"]), context=dict(data["context"]))


def decode_result(data: dict[str, Any]) -> Result:
    if data["kind"] == "judge":
        return JudgeResult.model_validate(data["result"])
    return RunResult.model_validate(data["result"])


class CeleryRunner(WaitForResult):
    """The :class:`~sandbox.runner.Runner` of a node whose programs run on Celery workers.

    Args:
        broker_url: the Redis both sides use (Celery broker and result channel).
        queue: jobs that may wait in the broker's queue; past that :meth:`submit` raises ``QueueFull``.
        run_limits: the maximum limits requests are checked against (the workers' must be the same).
    """

    def __init__(self, broker_url: str, queue: int, run_limits: Limits = RUN_LIMITS) -> None:
        self.broker_url = broker_url
        self.queue = queue
        self.run_limits = run_limits
        self.app = celery_app(broker_url)
        self._redis = aioredis.Redis.from_url(broker_url)
        self._waiting: dict[str, asyncio.Future[Result]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._languages: list[LanguageInfo] | None = None

    @property
    def unavailable(self) -> str | None:
        return None  # the workers check their own machine; a node without workers leaves jobs queued

    async def open(self) -> None:
        """Subscribe to the result channel (before any job is sent, so no result can be missed)."""
        if self._listener is None or self._listener.done():
            self._subscribed.clear()
            self._listener = asyncio.create_task(self._listen())
            await self._subscribed.wait()
            failure = self._listener.exception() if self._listener.done() else None
            if failure is not None:
                raise failure

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(RESULTS_CHANNEL)
            self._subscribed.set()
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                try:
                    data = json.loads(message["data"])
                    future = self._waiting.pop(data["id"], None)
                    if future is not None and not future.done():
                        future.set_result(decode_result(data))
                except (ValueError, KeyError, TypeError):
                    log.exception("dropped an unreadable sandbox result")
        finally:
            self._subscribed.set()
            await pubsub.aclose()

    async def languages(self) -> list[LanguageInfo]:
        if self._languages is None:
            self._languages = await asyncio.to_thread(installed_languages)
        return self._languages

    def validate(self, request: Request) -> None:
        validate(request, self.run_limits)

    async def ready(self) -> None:
        try:
            await self.open()
        except (OSError, RedisError) as exc:
            raise SandboxUnavailable(f"cannot reach the job queue's Redis: {exc}") from None

    async def submit(
        self, request: Request, context: dict[str, str] | None = None, job_id: str | None = None
    ) -> Submitted:
        self.validate(request)
        await self.ready()
        try:
            waiting = await self._redis.llen(QUEUE)
        except (OSError, RedisError) as exc:
            raise SandboxUnavailable(f"cannot reach the job queue's Redis: {exc}") from None
        if waiting >= self.queue:
            raise QueueFull(f"{waiting} programs are waiting for a worker; try again shortly")
        job = Job(id=job_id or uuid.uuid4().hex, request=request, context=dict(context or {}))
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting[job.id] = future
        try:
            await asyncio.to_thread(self.app.send_task, TASK, args=[encode_job(job)], queue=QUEUE)
        except Exception as exc:
            self._waiting.pop(job.id, None)
            raise SandboxUnavailable(f"could not queue the job: {exc}") from exc
        future.add_done_callback(lambda _: self._waiting.pop(job.id, None))
        return Submitted(job, future)

    async def send_input(self, job_id: str, data: bytes, eof: bool, max_total: int) -> None:
        key = INPUT_KEY.format(job_id)
        try:
            if await self._redis.exists(f"{key}:eof"):
                raise InputRefused(InputRefusal.CLOSED, "the run's input is closed (EOF was sent)")
            total = await self._redis.incrby(f"{key}:bytes", len(data))
            if total > max_total:
                await self._redis.decrby(f"{key}:bytes", len(data))
                raise InputRefused(
                    InputRefusal.TOO_LARGE, f"a run takes at most {max_total} bytes of typed input in all"
                )
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, (_EOF if eof else _DATA) + data)
                if eof:
                    pipe.set(f"{key}:eof", b"1", ex=INPUT_TTL_S)
                for name in (key, f"{key}:bytes"):
                    pipe.expire(name, INPUT_TTL_S)
                await pipe.execute()
        except (OSError, RedisError) as exc:
            raise SandboxUnavailable(f"cannot reach the job queue's Redis: {exc}") from None

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        await self._redis.aclose()


class WorkerHost:
    """The worker side: one asyncio loop in a thread, running Celery's tasks on a :class:`LocalRunner`.

    ``setup`` (a coroutine factory run on that loop first) builds the runner, typically with job hooks
    that need the loop's own connections; ``teardown`` undoes it. Celery's thread pool calls
    :meth:`execute` for every task; each call blocks its Celery thread until the job is done.
    """

    def __init__(
        self,
        broker_url: str,
        setup: Callable[[], Coroutine[Any, Any, LocalRunner]],
        teardown: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.broker_url = broker_url
        self._setup = setup
        self._teardown = teardown
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sandbox-jobs", daemon=True)
        self.runner: LocalRunner | None = None
        self._redis: aioredis.Redis | None = None

    def start(self) -> None:
        self._thread.start()
        self.runner = self._call(self._setup())
        self._redis = aioredis.Redis.from_url(self.broker_url)
        self._call(self.runner.open())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def execute(self, payload: dict[str, Any]) -> None:
        """Run one job (called by a Celery thread) and publish its result."""
        self._call(self._execute(payload))

    async def _execute(self, payload: dict[str, Any]) -> None:
        assert self.runner is not None
        assert self._redis is not None
        job = decode_job(payload)
        relay: asyncio.Task[None] | None = None
        try:
            submitted = await self.runner.submit(job.request, job.context, job_id=job.id)
            feed = self.runner.input_feed(job.id)
            if feed is not None:
                relay = asyncio.create_task(self._relay_input(job.id, feed))
            try:
                result = await submitted.result
            finally:
                if relay is not None:
                    relay.cancel()
                    await asyncio.gather(relay, return_exceptions=True)
        except (QueueFull, SandboxUnavailable, ValueError) as exc:
            log.error("sandbox job %s could not run: %s", job.id, exc)
            result = failed_result(job.request, f"the worker could not run the program: {exc}")
            try:
                await self.runner.hooks.finished(job, result)
            except Exception:
                log.exception("the job hook failed for job %s", job.id)
        message = {"id": job.id, "kind": payload["kind"], "result": result.model_dump(mode="json")}
        await self._redis.publish(RESULTS_CHANNEL, json.dumps(message))

    async def _relay_input(self, job_id: str, feed: InputFeed) -> None:
        """Move the input nodes send for the job (its Redis list) into its feed, until the job ends."""
        assert self._redis is not None
        key = INPUT_KEY.format(job_id)
        try:
            while not feed.ended:
                try:
                    item = await self._redis.blpop([key], timeout=1)  # type: ignore[misc]
                except (OSError, RedisError) as exc:
                    log.warning("could not read the input of job %s: %s", job_id, exc)
                    await asyncio.sleep(1)
                    continue
                if item is None:
                    continue
                raw: bytes = item[1]
                try:
                    feed.feed(raw[1:], eof=raw[:1] == _EOF)
                except InputRefused:
                    return  # ended, or closed: whatever else comes cannot reach the program
        finally:
            with contextlib.suppress(OSError, RedisError):
                await asyncio.shield(self._redis.delete(key, f"{key}:bytes"))

    def stop(self) -> None:
        async def close() -> None:
            if self.runner is not None:
                await self.runner.close()
            if self._redis is not None:
                await self._redis.aclose()
            if self._teardown is not None:
                await self._teardown()

        if self._thread.is_alive():
            self._call(close())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        self.loop.close()

    def register(self, app: Celery) -> None:
        """Make ``app``'s sandbox task run here."""

        @app.task(name=TASK, ignore_result=True)  # type: ignore[untyped-decorator]
        def execute(payload: dict[str, Any]) -> None:
            self.execute(payload)
