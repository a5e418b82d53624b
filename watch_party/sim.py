"""Simulated viewers' surroundings for tests and the benchmark: a media player, a skewed clock, a slow link.

Everything here runs against *true time* (``time.time()`` of the simulating process, the same clock the
server on this machine reads), so what every simulated player shows can be compared at one instant.

- :class:`SimPlayer`: a player whose position is a function of true time: it plays at its rate times
  ``1 + rate_error`` (media clocks are never exact), starts ``play_latency`` after ``play()``, freezes
  for ``seek_latency`` on a seek before going on from the new position, and its position reads carry a
  little noise (browsers report ``currentTime`` with limited precision).
- :func:`skewed_clock`: a viewer's own clock: true time plus an offset, running ``skew`` fast or slow.
- :class:`DelayedLink`: a :class:`~watch_party.client.Link` over a real Socket.IO connection that holds
  every message for a one-way delay (base plus random jitter) each way, first in first out like TCP.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

Clock = Callable[[], float]


class SimPlayer:
    """A simulated media player (see the module docstring). ``shown(t)`` is what it shows at true time ``t``.

    Args:
        rng: the randomness of latencies and noise.
        rate_error: relative error of the media clock (1e-3: 1 ms per second too fast).
        seek_latency: (min, max) seconds a seek freezes the picture.
        play_latency: (min, max) seconds between ``play()`` and the picture moving.
        read_noise: largest error of a position read, seconds.
        true_clock: true time.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        rate_error: float = 0.0,
        seek_latency: tuple[float, float] = (0.02, 0.1),
        play_latency: tuple[float, float] = (0.0, 0.015),
        read_noise: float = 0.002,
        true_clock: Clock = time.time,
    ) -> None:
        self.rng = rng
        self.rate_error = rate_error
        self.seek_latency = seek_latency
        self.play_latency = play_latency
        self.read_noise = read_noise
        self.now = true_clock
        self.media: dict[str, Any] | None = None
        self.playing = False
        self.rate = 1.0
        self._pos = 0.0
        self._at = self.now()
        self._moves_from = self._at
        self.seeks = 0

    def shown(self, t: float) -> float:
        pos = self._pos
        if self.playing:
            pos += self.rate * (1 + self.rate_error) * max(0.0, t - max(self._at, self._moves_from))
        duration = (self.media or {}).get("duration")
        return min(pos, duration) if duration is not None else pos

    def _rebase(self) -> None:
        now = self.now()
        self._pos = self.shown(now)
        self._at = now

    # --- Player ---

    def position(self) -> float:
        return self.shown(self.now()) + self.rng.uniform(-self.read_noise, self.read_noise)

    def is_playing(self) -> bool:
        return self.playing

    def load(self, media: dict[str, Any] | None) -> None:
        self.media = media
        self.playing = False
        self._pos, self._at = 0.0, self.now()

    def play(self) -> None:
        if self.playing:
            return
        self._rebase()
        self.playing = True
        self._moves_from = self._at + self.rng.uniform(*self.play_latency)

    def pause(self) -> None:
        if self.playing:
            self._rebase()
            self.playing = False

    def set_rate(self, rate: float) -> None:
        if rate != self.rate:
            self._rebase()
            self.rate = rate

    async def seek(self, position: float) -> None:
        stall = self.rng.uniform(*self.seek_latency)
        self.seeks += 1
        self._pos, self._at = position, self.now()
        self._moves_from = self._at + stall
        await asyncio.sleep(stall)


def skewed_clock(offset: float, skew: float = 0.0, true_clock: Clock = time.time) -> Clock:
    """A clock ``offset`` seconds off true time that gains ``skew`` seconds per second."""
    origin = true_clock()

    def clock() -> float:
        t = true_clock()
        return t + offset + skew * (t - origin)

    return clock


class _Pipe:
    """One direction of a link: each message waits its delay, and never overtakes an earlier one."""

    def __init__(self, delay: Callable[[], float]) -> None:
        self.delay = delay
        self._last_due = 0.0

    async def cross(self) -> None:
        loop = asyncio.get_running_loop()
        due = max(self._last_due, loop.time() + self.delay())
        self._last_due = due
        await asyncio.sleep(max(0.0, due - loop.time()))


class DelayedLink:
    """A :class:`~watch_party.client.Link` over ``sio`` with a simulated one-way delay each way.

    Args:
        sio: a connected ``socketio.AsyncClient``.
        rng: the randomness of the jitter.
        delay_s: the base one-way delay.
        jitter_s: mean of the exponentially distributed extra delay of each message.
    """

    def __init__(self, sio: socketio.AsyncClient, rng: random.Random, *, delay_s: float, jitter_s: float) -> None:
        self.sio = sio

        def one_way() -> float:
            return delay_s + rng.expovariate(1 / jitter_s) if jitter_s > 0 else delay_s

        self.up = _Pipe(one_way)
        self.down = _Pipe(one_way)
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        await self.up.cross()
        ack: dict[str, Any] = await self.sio.call(event, data, timeout=30)
        await self.down.cross()
        return ack

    def on(self, event: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        async def delayed(data: Any) -> None:
            await self.down.cross()
            await handler(data)

        def receive(data: Any) -> None:
            task = asyncio.create_task(delayed(data))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self.sio.on(event, receive)
