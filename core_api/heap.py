"""Keeping long-lived objects out of the garbage collector's full collections.

CPython's cyclic collector walks every tracked object of the oldest generation in a full collection. A node
holds a lot that lives as long as the process (modules, schemas, the app) and, per contest it pushes, the
in-memory standings (leaderboards/standings.py: tens of thousands of rows and cells). With 100,000 members a
full collection took 120-340 ms, and when one fell inside a leaderboard refresh that push was late by as
much (bench/RESULTS.md, "Leaderboard pushes").

:class:`Heap` *settles* the heap: one collection (the garbage goes), then :func:`gc.freeze` moves every
object still alive into the permanent generation, which collections no longer walk. A settle runs once the
app has started, and again (deferred, and at most once per ``min_interval_s``) when something asks for it:
the contest standings do after a build. Frozen objects are still freed by reference counting when their
last reference goes; only *cyclic* garbage made of frozen objects would stay, so every ``full_every_s`` the
heap is unfrozen, collected whole (one full pause, like the ones the freeze avoids) and frozen again. When
the app stops, everything is unfrozen.

The collector is one per process, and so is the :data:`HEAP`; several apps in one process (tests) share it,
counted by :meth:`Heap.start` / :meth:`Heap.stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class HeapStats:
    """What the settles did (exported as metrics)."""

    settles: int = 0
    full_rounds: int = 0
    frozen: int = 0  # objects in the permanent generation after the last settle
    last_settle_s: float = 0.0  # how long the last settle's collection took


class Heap:
    """The process's settle policy (see the module's documentation).

    Args:
        clock: monotonic seconds (tests pass their own).
        collect: the collection a settle runs (``gc.collect``).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, collect: Callable[[], int] = gc.collect) -> None:
        self.clock = clock
        self.collect = collect
        self.users = 0  # apps that enabled settling
        self.min_interval_s = 60.0
        self.defer_s = 0.05
        self.full_every_s = 3600.0
        self.stats = HeapStats()
        self._last = float("-inf")
        self._pending: asyncio.TimerHandle | None = None
        self._full: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.users > 0

    def start(self, *, min_interval_s: float, full_every_s: float, defer_s: float = 0.05) -> None:
        """An app enables settling: settle right away (the start-up's objects), and keep a full round."""
        self.users += 1
        self.min_interval_s, self.full_every_s, self.defer_s = min_interval_s, full_every_s, defer_s
        self.settle()
        if self._full is None and full_every_s > 0:
            self._full = asyncio.get_running_loop().create_task(self._full_rounds())

    async def stop(self) -> None:
        """An app stops; the last one out unfreezes everything (its objects can be collected again)."""
        self.users = max(0, self.users - 1)
        if self.users:
            return
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._full is not None:
            self._full.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._full
            self._full = None
        gc.unfreeze()
        self.stats.frozen = gc.get_freeze_count()

    def request(self) -> None:
        """Ask for a settle soon: after ``defer_s`` (so the caller's work, a push, goes out first) and no sooner
        than ``min_interval_s`` after the last one. Asks meanwhile are one. Does nothing unless enabled."""
        if not self.enabled or self._pending is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(self.defer_s, self._last + self.min_interval_s - self.clock())
        self._pending = loop.call_later(delay, self._settle_pending)

    def _settle_pending(self) -> None:
        self._pending = None
        if self.enabled:
            self.settle()

    def settle(self) -> None:
        """Collect what is unfrozen, then freeze what is left."""
        started = time.perf_counter()
        self.collect()
        gc.freeze()
        self.stats.last_settle_s = time.perf_counter() - started
        self.stats.settles += 1
        self.stats.frozen = gc.get_freeze_count()
        self._last = self.clock()
        log.debug("heap settled in %.1f ms: %d objects frozen", self.stats.last_settle_s * 1000, self.stats.frozen)

    def full_round(self) -> None:
        """Unfreeze, collect everything (cyclic garbage among frozen objects goes too), freeze again."""
        gc.unfreeze()
        self.settle()
        self.stats.full_rounds += 1

    async def _full_rounds(self) -> None:
        while True:
            await asyncio.sleep(self.full_every_s)
            if self.enabled:
                self.full_round()


HEAP = Heap()
"""The process's heap policy (the collector is one per process)."""


def request_settle() -> None:
    """Something long-lived was just built (a contest's standings): settle the heap soon, if enabled."""
    HEAP.request()
