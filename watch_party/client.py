"""The reference watch party client: clock sync, and the correction rule that keeps a player in step.

A browser client implements the same three parts (the README's "Watch parties" section restates them):

**1. Clock sync (NTP's four timestamps, each direction's minimum).** Every heartbeat carries the
client's send time ``t1``; the ack returns it with the server's receive time ``t2`` and send time ``t3``;
the client notes the arrival ``t4``. With the clock offset ``θ`` (server minus client), ``t2 - t1 = θ +
up`` and ``t4 - t3 = down - θ``, where each one-way time is the path's fixed delay plus queueing, and
queueing only ever adds. Over the last ``window`` round trips the client takes the smallest ``t2 - t1``
and, separately, the smallest ``t4 - t3``: each is its direction's least-queued message, so
``θ = (min(t2 - t1) - min(t4 - t3)) / 2`` is off only by half the difference of two small minima
(NTP's clock filter picks the single least-delayed round trip instead, whose two halves are not both
the least queued). The server's processing time (``t3 - t2``) never counts. Syncplay keeps an
exponential moving average of the round trip (weight 0.85) and takes half of it as the age of a
message; it never learns the clock offset. The client sends a burst of heartbeats when it starts, then
one every ``heartbeat_s``. (Like NTP, it assumes the path's fixed delay is the same both ways.)

**2. The target.** The state says: at server time ``server_time`` the media is at ``position``. With
server time ``T = local clock + offset`` the player should show, while playing, ``position + rate *
(T - server_time)`` from ``server_time`` on and ``position - rate_before * (server_time - T)`` before
(clamped to the media), or exactly ``position`` when paused. So a ``server_time`` in the future with
``rate_before`` 0 means: hold at ``position``, start then; with ``rate_before`` > 0: play at that rate,
switch to ``rate`` then. A timer, not the correction loop, makes the switch on the instant. States are
applied in ``version`` order; an older version than the one held is ignored.

**3. The correction rule** (:func:`correct`, run every ``correction_interval_s`` while playing), with
``drift = player position - target`` (positive: ahead):

- ``|drift| >= seek_threshold_s``, or, right after a change of the timeline (play, seek, load, rate),
  ``|drift| >= hard_sync_s``: seek to the target, aimed ahead by the player's measured seek time.
- ``|drift| >= nudge_threshold_s`` (or, while already nudging, ``> nudge_release_s``): play at
  ``rate * (1 - clamp(drift / nudge_horizon_s, ±max_nudge))``: a proportional nudge that cancels the
  drift over about ``nudge_horizon_s`` and never changes the rate by more than ``max_nudge``.
- otherwise play at the state's rate.

While paused the player is seeked to the exact position if it is off by more than ``paused_tolerance_s``.
The thresholds come from the server (``tuning`` in the ``watch:sync`` answer), so operators tune them in
one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, Protocol

import socketio

log = logging.getLogger(__name__)
Clock = Callable[[], float]


@dataclass(frozen=True)
class SyncSettings:
    """The client's knobs (seconds unless said otherwise); the first seven come from the server's tuning."""

    heartbeat_s: float = 1.0
    hard_sync_s: float = 0.04
    seek_threshold_s: float = 0.5
    nudge_threshold_s: float = 0.005
    nudge_release_s: float = 0.001
    max_nudge: float = 0.1
    nudge_horizon_s: float = 1.0
    paused_tolerance_s: float = 0.005
    correction_interval_s: float = 0.1
    burst: int = 5
    """Heartbeats sent in quick succession when the client starts, to sync the clock at once."""
    burst_interval_s: float = 0.1
    window: int = 16
    """Round trips the clock filter chooses from."""

    def tuned(self, tuning: dict[str, Any]) -> SyncSettings:
        """These settings with the server's tuning applied (unknown keys ignored)."""
        kinds = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        changes: dict[str, Any] = {k: kinds[k](v) for k, v in tuning.items() if k in kinds}
        return replace(self, **changes)


# --- clock sync ----------------------------------------------------------------------------------


class ClockSync:
    """Estimates ``server clock - local clock`` from heartbeat round trips (see the module docstring).

    Args:
        window: how many recent samples the minimum-delay filter looks at.
        rtt_weight: weight of the old value in the moving average of the round trip (Syncplay's 0.85);
            the average is for display and reports, the offset comes from the filter.
    """

    def __init__(self, window: int = 16, rtt_weight: float = 0.85) -> None:
        self._up: deque[float] = deque(maxlen=window)
        self._down: deque[float] = deque(maxlen=window)
        self.rtt_weight = rtt_weight
        self.rtt_avg: float | None = None
        self.offset: float | None = None
        self.delay: float | None = None
        """The least round trip in the window, without the server's processing time."""

    def add(self, t1: float, t2: float, t3: float, t4: float) -> None:
        """One round trip: sent at local ``t1``, received by the server at ``t2``, answered at ``t3``,
        back at local ``t4``."""
        self._up.append(t2 - t1)
        self._down.append(t4 - t3)
        up, down = min(self._up), min(self._down)
        self.offset = (up - down) / 2
        self.delay = max(0.0, up + down)
        rtt = t4 - t1
        self.rtt_avg = rtt if self.rtt_avg is None else self.rtt_avg * self.rtt_weight + rtt * (1 - self.rtt_weight)

    @property
    def synced(self) -> bool:
        return self.offset is not None

    def server_time(self, local: float) -> float:
        return local + (self.offset or 0.0)

    def local_time(self, server: float) -> float:
        return server - (self.offset or 0.0)


# --- the correction rule -------------------------------------------------------------------------


@dataclass(frozen=True)
class Correction:
    kind: Literal["seek", "rate"]
    rate: float = 1.0


def correct(drift: float, *, base_rate: float, nudging: bool, fresh: bool, settings: SyncSettings) -> Correction:
    """What to do about ``drift`` (player minus target, seconds) while playing at ``base_rate``."""
    size = abs(drift)
    if size >= settings.seek_threshold_s or (fresh and size >= settings.hard_sync_s):
        return Correction("seek", base_rate)
    if size >= settings.nudge_threshold_s or (nudging and size > settings.nudge_release_s):
        nudge = max(-settings.max_nudge, min(settings.max_nudge, drift / settings.nudge_horizon_s))
        return Correction("rate", base_rate * (1 - nudge))
    return Correction("rate", base_rate)


def target_position(state: dict[str, Any], server_now: float) -> float:
    """Where the shared player is at server time ``server_now``."""
    position = float(state["position"])
    if state["playing"]:
        since = server_now - state["server_time"]
        position = position + state["rate"] * since if since >= 0 else position + state.get("rate_before", 0.0) * since
        position = max(0.0, position)
    media = state.get("media") or {}
    duration = media.get("duration")
    return min(position, duration) if duration is not None else position


def rate_at(state: dict[str, Any], server_now: float) -> float:
    """The shared player's rate at server time ``server_now`` (0 while holding for a start)."""
    if server_now >= state["server_time"]:
        return float(state["rate"])
    return float(state.get("rate_before", 0.0))


def _timeline(state: dict[str, Any]) -> tuple[Any, ...]:
    media = state.get("media") or {}
    return (media.get("item_id"), state["playing"], state["position"], state["server_time"], state["rate"],
            state.get("rate_before", 0.0))  # fmt: skip


# --- what the client drives ----------------------------------------------------------------------


class Player(Protocol):
    """The local media player (an HTMLMediaElement in a browser)."""

    def position(self) -> float: ...

    def is_playing(self) -> bool: ...

    def load(self, media: dict[str, Any] | None) -> None:
        """Open ``media`` (None: nothing), paused at 0."""
        ...

    def play(self) -> None: ...

    def pause(self) -> None: ...

    def set_rate(self, rate: float) -> None: ...

    async def seek(self, position: float) -> None:
        """Jump to ``position``; returns once the player can show it."""
        ...


class Link(Protocol):
    """The connection to the server: calls with acks, and server events."""

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]: ...

    def on(self, event: str, handler: Callable[[Any], Awaitable[None]]) -> None: ...


class SocketLink:
    """A :class:`Link` over a connected ``socketio.AsyncClient``."""

    def __init__(self, sio: socketio.AsyncClient, timeout: float = 10.0) -> None:
        self.sio = sio
        self.timeout = timeout

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        ack: dict[str, Any] = await self.sio.call(event, data, timeout=self.timeout)
        return ack

    def on(self, event: str, handler: Callable[[Any], Awaitable[None]]) -> None:
        self.sio.on(event, handler)


class CommandFailed(Exception):
    def __init__(self, event: str, error: dict[str, Any]) -> None:
        super().__init__(f"{event}: {error.get('code')}: {error.get('message')}")
        self.code = error.get("code")


class WatchClient:
    """Keeps ``player`` in step with a room's watch party over ``link``.

    Args:
        link: the connection (the room must already be joined).
        room_id: the watch room.
        player: the local player.
        clock: the local clock, seconds (``time.time`` by default).
        settings: the knobs; the server's tuning replaces the first seven unless ``adopt_tuning`` is off.
    """

    def __init__(
        self,
        link: Link,
        room_id: str,
        player: Player,
        *,
        clock: Clock = time.time,
        settings: SyncSettings | None = None,
        adopt_tuning: bool = True,
    ) -> None:
        self.link = link
        self.room_id = room_id
        self.player = player
        self.clock = clock
        self.settings = settings or SyncSettings()
        self.adopt_tuning = adopt_tuning
        self.sync = ClockSync(self.settings.window)
        self.state: dict[str, Any] | None = None
        self.readiness: dict[str, Any] | None = None
        self.seek_lag = 0.0
        self._loaded: Any = object()
        self._fresh = False
        self._nudging = False
        self._seeking = False
        self._start_timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        link.on("watch:state", self._on_state)
        link.on("watch:readiness", self._on_readiness)

    @property
    def version(self) -> int | None:
        return self.state["version"] if self.state else None

    # --- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the state and tuning, sync the clock with a burst of heartbeats, then keep in step."""
        ack = await self._call("watch:sync", {"room_id": self.room_id})
        if self.adopt_tuning:
            self.settings = self.settings.tuned(ack.get("tuning", {}))
        for _ in range(self.settings.burst):
            await self.heartbeat()
            await asyncio.sleep(self.settings.burst_interval_s)
        self.apply(ack["state"])
        self._tasks = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._corrections())]

    async def stop(self) -> None:
        if self._start_timer is not None:
            self._start_timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        ack = await self.link.call(event, data)
        if not ack.get("ok"):
            raise CommandFailed(event, ack.get("error") or {})
        return ack

    # --- commands (what the user does) -------------------------------------------------------------

    async def command(self, event: str, **fields: Any) -> dict[str, Any]:
        """Send a ``watch:*`` command based on the state held; apply and return the new state."""
        payload = {"room_id": self.room_id, **fields}
        if self.version is not None:
            payload.setdefault("version", self.version)
        ack = await self._call(event, payload)
        state: dict[str, Any] = ack["state"]
        self.apply(state)
        return state

    async def play(self, **fields: Any) -> dict[str, Any]:
        return await self.command("watch:play", **fields)

    async def pause(self, **fields: Any) -> dict[str, Any]:
        return await self.command("watch:pause", **fields)

    async def seek(self, position: float) -> dict[str, Any]:
        return await self.command("watch:seek", position=position)

    async def load(self, media: dict[str, Any]) -> dict[str, Any]:
        return await self.command("watch:load", media=media)

    async def set_ready(self, ready: bool = True) -> dict[str, Any]:
        ack = await self._call("watch:ready", {"room_id": self.room_id, "ready": ready})
        readiness: dict[str, Any] = ack["readiness"]
        return readiness

    async def resync(self) -> None:
        ack = await self._call("watch:sync", {"room_id": self.room_id})
        self.apply(ack["state"])

    # --- incoming state ----------------------------------------------------------------------------

    async def _on_state(self, data: Any) -> None:
        if isinstance(data, dict) and data.get("room_id") == self.room_id:
            self.apply(data)

    async def _on_readiness(self, data: Any) -> None:
        if not isinstance(data, dict) or data.get("room_id") != self.room_id:
            return
        if self.readiness is None or data.get("rev", 0) >= self.readiness.get("rev", 0):
            self.readiness = data

    def apply(self, state: dict[str, Any]) -> None:
        """Take ``state`` if it is newer than the one held; the player follows at once."""
        if self.state is not None and state["version"] <= self.state["version"]:
            return
        previous, self.state = self.state, state
        if previous is None or _timeline(previous) != _timeline(state):
            self._fresh = True
            self._schedule_start()
        self._wake.set()

    # --- heartbeats and clock sync -------------------------------------------------------------------

    async def heartbeat(self) -> None:
        t1 = self.clock()
        payload: dict[str, Any] = {
            "room_id": self.room_id,
            "position": max(0.0, self.player.position()),
            "playing": self.player.is_playing(),
            "client_time": t1,
        }
        if self.version is not None:
            payload["version"] = self.version
        if self.sync.synced:
            payload["offset"] = self.sync.offset
            payload["rtt"] = self.sync.rtt_avg
        ack = await self._call("watch:heartbeat", payload)
        t4 = self.clock()
        self.sync.add(t1, ack["received_at"], ack["server_time"], t4)
        if self.version is not None and ack["version"] > self.version:
            await self.resync()  # a broadcast went missing

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.heartbeat()
            except (CommandFailed, socketio.exceptions.SocketIOError) as exc:
                log.warning("heartbeat failed: %s", exc)

    # --- keeping the player in step ------------------------------------------------------------------

    def target(self) -> float | None:
        """Where the player should be now, or None with nothing to show."""
        if self.state is None or self.state.get("media") is None:
            return None
        return target_position(self.state, self.sync.server_time(self.clock()))

    def drift(self) -> float | None:
        target = self.target()
        return None if target is None else self.player.position() - target

    def _schedule_start(self) -> None:
        """A state that starts playing (or changes rate) in the future: do it on that instant."""
        if self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = None
        state = self.state
        if state is None or not state["playing"] or state.get("media") is None:
            return
        delay = self.sync.local_time(state["server_time"]) - self.clock()
        if delay > 0:
            self._start_timer = asyncio.get_running_loop().call_later(delay, self._start_now)

    def _start_now(self) -> None:
        self._start_timer = None
        if self.state is not None and self.state["playing"] and not self._seeking:
            self._nudging = False
            self.player.set_rate(self.state["rate"])
            self.player.play()
        self._wake.set()

    async def _corrections(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.correction_interval_s)
            self._wake.clear()
            await self.step()

    async def step(self) -> None:
        """One pass of the correction rule (see the module docstring)."""
        state = self.state
        if state is None or self._seeking:
            return
        media = state.get("media")
        if (media or {}).get("item_id") != self._loaded:
            self._loaded = (media or {}).get("item_id")
            self.player.load(media)
        if media is None:
            return
        server_now = self.sync.server_time(self.clock())
        s = self.settings
        rate = rate_at(state, server_now) if state["playing"] else 0.0
        if state["playing"] and server_now < state["server_time"] and self._start_timer is None:
            self._schedule_start()
        if rate == 0.0:  # paused, or holding for a start
            if self.player.is_playing():
                self.player.pause()
            self._nudging = False
            if abs(self.player.position() - state["position"]) > s.paused_tolerance_s:
                await self._seek_to(state["position"])
            return
        if not self.player.is_playing():
            self.player.play()
        drift = self.player.position() - target_position(state, server_now)
        fix = correct(drift, base_rate=rate, nudging=self._nudging, fresh=self._fresh, settings=s)
        self._fresh = False
        if fix.kind == "seek":
            self._nudging = False
            self.player.set_rate(rate)
            ahead = self.sync.server_time(self.clock()) + self.seek_lag
            await self._seek_to(target_position(state, ahead))
        else:
            self._nudging = fix.rate != rate
            self.player.set_rate(fix.rate)

    async def _seek_to(self, position: float) -> None:
        self._seeking = True
        started = self.clock()
        try:
            await self.player.seek(position)
        finally:
            self._seeking = False
        # The player stalls while it seeks: aim the next seek made while playing that much further ahead.
        self.seek_lag = 0.5 * self.seek_lag + 0.5 * (self.clock() - started)
