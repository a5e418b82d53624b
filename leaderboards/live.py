"""Coalesced live pushes: at most one ``leaderboard:update`` per contest per interval (500 ms).

Whoever changes a contest's standings calls :meth:`Coalescer.touch`. The first touch starts one task
for that contest; touches arriving meanwhile only mark the contest dirty, so a burst of verdicts becomes
one push, and a verdict after a push is never lost: the task runs again. The first change after a quiet
interval is pushed at once (leading edge); changes during the interval go out together when it ends.
The task starts the refresh (bring the standings up to date) a little before the interval since the
last push ends, by as long as refreshes have been taking (their smoothed mean plus four smoothed
deviations, as TCP times a round trip), and the refresh waits for :data:`Ready`
before it emits: so pushes go out one interval apart under steady load, and a verdict waits for the
interval, not for the interval plus a computation.

With several nodes, an optional :class:`Gate` (a Redis key set with ``NX PX interval`` right before a
push) makes the limit hold across the cluster: a node that loses the race waits for the key to expire.
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

Ready = Callable[[], Awaitable[None]]
"""Awaited by a refresh right before its first push: returns when the interval (and the gate) allow it."""
Refresh = Callable[[uuid.UUID, Ready], Awaitable[None]]


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
    """Per-contest refresh tasks, owned here and cancelled by :meth:`close`.

    Args:
        refresh: brings a contest's standings up to date and pushes them, awaiting ``ready`` first.
        interval_s: least time between two pushes of one contest (0.5 s).
        gate: the cluster-wide limit (Redis), if any.
        observe: given, for each push, the seconds from the interval allowing it to the public push having
            been handed to the transport (:meth:`pushed`): what the server adds (a Prometheus histogram).
        clock: monotonic seconds; ``sleep``: waits that many seconds (tests pass virtual ones).
    """

    def __init__(
        self,
        refresh: Refresh,
        interval_s: float = 0.5,
        gate: Gate | None = None,
        *,
        observe: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.refresh = refresh
        self.interval_s = interval_s
        self.gate = gate
        self.observe = observe
        self.clock = clock
        self.sleep = sleep
        self._dirty: set[uuid.UUID] = set()
        self._since: dict[uuid.UUID, float] = {}  # when the contest's oldest change not yet being pushed came
        self.allowed_at: dict[uuid.UUID, float] = {}  # when the rule allowed the contest's latest push
        self._last: dict[uuid.UUID, float] = {}  # when the contest's last push went out (monotonic)
        # How long a refresh takes to be ready to push: a smoothed mean and deviation, as TCP estimates a
        # round trip (RFC 6298); the refresh starts mean + 4 deviations early, so a slow one is rarely late.
        self._compute_s: dict[uuid.UUID, tuple[float, float]] = {}
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.pushes = 0

    def touch(self, contest_id: uuid.UUID) -> None:
        self._dirty.add(contest_id)
        self._since.setdefault(contest_id, self.clock())
        if contest_id not in self._tasks:
            self._tasks[contest_id] = asyncio.create_task(self._run(contest_id))

    def pushed(self, contest_id: uuid.UUID) -> None:
        """Called by the refresh right after the contest's public push was handed to the transport."""
        allowed = self.allowed_at.get(contest_id)
        if self.observe is not None and allowed is not None:
            self.observe(max(0.0, self.clock() - allowed))

    async def idle(self) -> None:
        """Wait until every pending refresh has run (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _run(self, contest_id: uuid.UUID) -> None:
        try:
            while contest_id in self._dirty:
                # Start computing early enough that the push is ready when the interval allows it.
                mean, dev = self._compute_s.get(contest_id, (0.0, 0.0))
                lead = min(mean + 4 * dev, self.interval_s)
                wait = self._last.get(contest_id, float("-inf")) + self.interval_s - lead - self.clock()
                if wait > 0:
                    await self.sleep(wait)
                self._dirty.discard(contest_id)
                since = self._since.pop(contest_id, self.clock())
                started = self.clock()

                async def ready(started: float = started, since: float = since) -> None:
                    took = self.clock() - started
                    before = self._compute_s.get(contest_id)
                    if before is None:
                        self._compute_s[contest_id] = (took, took / 2)
                    else:
                        mean, dev = before
                        self._compute_s[contest_id] = (
                            0.875 * mean + 0.125 * took,
                            0.75 * dev + 0.25 * abs(took - mean),
                        )
                    allowed = max(since, self._last.get(contest_id, float("-inf")) + self.interval_s)
                    left = allowed - self.clock()
                    while left > 0:  # (again if woken early: uvloop's timers have millisecond resolution)
                        await self.sleep(left)
                        left = allowed - self.clock()
                    if self.gate is not None:
                        await self.gate.wait_turn(contest_id, self.interval_s)
                    self._last[contest_id] = self.clock()
                    self.allowed_at[contest_id] = allowed

                try:
                    await self.refresh(contest_id, ready)
                    self.pushes += 1
                except Exception:
                    log.exception("could not refresh the boards of contest %s", contest_id)
                if self._last.get(contest_id, float("-inf")) < started:  # failed before pushing: back off
                    self._last[contest_id] = self.clock()
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
