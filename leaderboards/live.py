"""Coalesced live pushes: at most one ``leaderboard:update`` per contest per interval (500 ms).

Whoever changes a contest's standings calls :meth:`Coalescer.touch`. The first touch starts one task
for that contest that waits until ``interval`` has passed since its last push, then refreshes (reads
Postgres, rewrites the boards, emits). Touches arriving meanwhile only mark the contest dirty, so a
burst of verdicts becomes one push, and a verdict after a push is never lost: the task runs again.

With several nodes, an optional :class:`Gate` (a Redis key set with ``NX PX interval``) makes the limit
hold across the cluster: a node that loses the race waits for the key to expire, then refreshes with
whatever is in Postgres by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

Refresh = Callable[[uuid.UUID], Awaitable[None]]


class Gate(Protocol):
    async def wait_turn(self, contest_id: uuid.UUID, interval_s: float) -> None: ...

    async def close(self) -> None: ...


class RedisGate:
    """Cluster-wide: one push per contest per interval, whichever node asks first."""

    def __init__(self, url: str) -> None:
        self.redis: aioredis.Redis = aioredis.Redis.from_url(url)

    async def wait_turn(self, contest_id: uuid.UUID, interval_s: float) -> None:
        key = f"studyhall:board:push:{contest_id}"
        ms = max(1, int(interval_s * 1000))
        while not await self.redis.set(key, b"1", nx=True, px=ms):
            left = await self.redis.pttl(key)
            await asyncio.sleep(max(left, 1) / 1000)

    async def close(self) -> None:
        await self.redis.aclose()


class Coalescer:
    """Per-contest refresh tasks, owned here and cancelled by :meth:`close`."""

    def __init__(self, refresh: Refresh, interval_s: float = 0.5, gate: Gate | None = None) -> None:
        self.refresh = refresh
        self.interval_s = interval_s
        self.gate = gate
        self._dirty: set[uuid.UUID] = set()
        self._last: dict[uuid.UUID, float] = {}
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.pushes = 0

    def touch(self, contest_id: uuid.UUID) -> None:
        self._dirty.add(contest_id)
        if contest_id not in self._tasks:
            self._tasks[contest_id] = asyncio.create_task(self._run(contest_id))

    async def idle(self) -> None:
        """Wait until every pending refresh has run (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _run(self, contest_id: uuid.UUID) -> None:
        try:
            while contest_id in self._dirty:
                wait = self._last.get(contest_id, float("-inf")) + self.interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.gate is not None:
                    await self.gate.wait_turn(contest_id, self.interval_s)
                self._dirty.discard(contest_id)
                try:
                    await self.refresh(contest_id)
                    self.pushes += 1
                except Exception:
                    log.exception("could not refresh the boards of contest %s", contest_id)
                self._last[contest_id] = time.monotonic()
        finally:
            self._tasks.pop(contest_id, None)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.gate is not None:
            await self.gate.close()
