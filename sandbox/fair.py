"""A fair gate: a bounded number of holders at once, the waiters let in by turns between their owners.

A semaphore lets waiters in first come, first served, so whoever queues twelve jobs first holds the
workers until all twelve are done. :class:`FairGate` lets the next waiter in from the owner (a user)
holding the fewest places, and among those from the one served longest ago; each owner's own waiters
go in their arrival order. With one place and user A waiting with three jobs behind the one it runs,
a job of user B that arrives later goes in next, then A's, then B's again, and so on.

Used by the in-process sandbox pool (:class:`~sandbox.runner.LocalRunner`, keyed by the job's user) and
by contest judging (:class:`~leaderboards.service.Contests`, in front of whichever runner judges).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator


class FairGate:
    """At most ``capacity`` holders at once; waiters go in by turns between keys (see the module).

    Args:
        capacity: places (at least 1).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a fair gate needs at least one place")
        self.capacity = capacity
        self._holders = 0
        self._held: dict[str, int] = {}  # places each key holds now
        self._served: dict[str, int] = {}  # when each active key was last let in (a growing count)
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        self._turns = itertools.count(1)

    @property
    def holders(self) -> int:
        return self._holders

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    @contextlib.asynccontextmanager
    async def place(self, key: str) -> AsyncIterator[None]:
        """Hold a place for ``key`` for the body of the ``async with``."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)

    async def acquire(self, key: str) -> None:
        if self._holders < self.capacity and not self._waiting:
            self._enter(key)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(key)  # let in, then cancelled before it could use the place: pass it on
            else:
                self._forget(key, future)
            raise

    def release(self, key: str) -> None:
        self._holders -= 1
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)
            if key not in self._waiting:
                self._served.pop(key, None)
        self._wake()

    def _enter(self, key: str) -> None:
        self._holders += 1
        self._held[key] = self._held.get(key, 0) + 1
        self._served[key] = next(self._turns)

    def _forget(self, key: str, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(future)
        if not queue:
            del self._waiting[key]
            if key not in self._held:
                self._served.pop(key, None)
        self._wake()

    def _wake(self) -> None:
        while self._holders < self.capacity and self._waiting:
            key = min(self._waiting, key=lambda k: (self._held.get(k, 0), self._served.get(k, 0)))
            queue = self._waiting[key]
            future = queue.popleft()
            if not queue:
                del self._waiting[key]
            if future.done():  # cancelled while waiting
                continue
            future.set_result(None)
            self._enter(key)
