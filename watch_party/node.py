"""One node's share of the watch parties: the state cache, changes and their broadcast, upkeep and timers.

**Where the truth lives.** Each room's state is one row in Postgres. Every change — a command, a ready
mark, upkeep — runs :meth:`WatchNode.change` or its twin in :mod:`watch_party.service`: lock the row,
apply the pure state machine, save, commit, and only then broadcast ``watch:state`` to the room's
Socket.IO room (every node, through Redis when scaled). The row lock serialises writers on all nodes,
and ``version`` lets clients keep the newest state when broadcasts from two nodes cross.

**The cache.** Heartbeats (about one per viewer per second) need the state to measure drift but must not
cost a query each: a node keeps the newest state it has seen per room. A heartbeat naming a newer
version than the cached one (another node changed it) reloads the row; upkeep re-reads every active
room's row each beat anyway.

**Upkeep** (every ``watch_upkeep_s``, for rooms a local connection used lately): pass leadership on when
the leader is gone, start a play whose ready check is now met, and advance past an item that ran out.
An item's end is also timed exactly: whenever a node learns a state that plays a known-length item, it
sets a timer for the end. Several nodes may fire for the same end; the first advances it, the others
find nothing to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Collection, Coroutine
from typing import Any

from core_api.context import Core
from core_api.events import Transport
from core_api.paywall import NO_LOCKS, LectureLocks, locked_lectures
from core_api.settings import Settings
from rooms.access import socket_room
from rooms.presence import Presence
from watch_party import codec, core, store
from watch_party.board import SyncBoard
from watch_party.core import Context, Person, Rules, WatchState
from watch_party.progress import ProgressWriter

log = logging.getLogger(__name__)

RELOAD_EVERY_S = 0.25


class WatchNode:
    """Args: core, transport (the Socket.IO server), presence (the rooms' presence), board, settings,
    clock (server time in seconds since the epoch; every node must keep it NTP-synchronised)."""

    def __init__(
        self,
        core_: Core,
        transport: Transport,
        presence: Presence,
        board: SyncBoard,
        settings: Settings,
        clock: Any = time.time,
    ) -> None:
        self.core = core_
        self.transport = transport
        self.presence = presence
        self.board = board
        self.settings = settings
        self.clock = clock
        self.cache: dict[str, WatchState] = {}
        self._active: dict[str, float] = {}
        self._loaded: dict[str, float] = {}
        self._timers: dict[str, tuple[float, asyncio.Task[None]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.progress = ProgressWriter(
            core_, settings.watch_progress_interval_s, self.spawn, max_gap_s=settings.watch_viewer_ttl_s, clock=clock
        )

    @property
    def tuning(self) -> dict[str, float]:
        """The correction rule's thresholds, as clients get them."""
        s = self.settings
        return {
            "heartbeat_s": s.watch_heartbeat_s,
            "hard_sync_s": s.watch_hard_sync_s,
            "seek_threshold_s": s.watch_seek_threshold_s,
            "nudge_threshold_s": s.watch_nudge_threshold_s,
            "nudge_release_s": s.watch_nudge_release_s,
            "max_nudge": s.watch_max_nudge,
            "nudge_horizon_s": s.watch_nudge_horizon_s,
        }

    # --- tasks -------------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, owned by the node (cancelled on close, failures logged)."""
        if self._closed:
            coro.close()
            return
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("watch party background task failed", exc_info=task.exception())

    async def settle(self) -> None:
        """Wait for the background tasks running now (progress writes, checks) to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks) + [t for _, t in self._timers.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._timers.clear()

    # --- state -------------------------------------------------------------------------------------

    def touch(self, room_id: str) -> None:
        """A local connection used the room: keep it under upkeep for a while."""
        self._active[room_id] = time.monotonic()

    def remember(self, state: WatchState) -> None:
        """Cache ``state`` if it is the newest seen, and time the end of its item."""
        known = self.cache.get(state.room_id)
        if known is not None and (known.version, known.ready_rev) >= (state.version, state.ready_rev):
            return
        self.cache[state.room_id] = state
        self._time_end(state)

    async def state(self, room_id: uuid.UUID, at_least: int | None = None) -> WatchState:
        """The room's state from the cache, or from the database when not cached or older than ``at_least``
        (at most every :data:`RELOAD_EVERY_S` per room: a client claiming a version that does not exist
        must not cost a query per heartbeat)."""
        key = str(room_id)
        cached = self.cache.get(key)
        if cached is not None and (at_least is None or cached.version >= at_least):
            return cached
        if cached is not None and time.monotonic() - self._loaded.get(key, float("-inf")) < RELOAD_EVERY_S:
            return cached
        self._loaded[key] = time.monotonic()
        async with self.core.pool.acquire() as conn:
            state = await self.read(conn, room_id)
        self.remember(state)
        return self.cache.get(str(room_id), state)

    async def read(self, conn: Any, room_id: uuid.UUID) -> WatchState:
        """The stored state, or the one a new party would start with (not stored until something changes)."""
        state = await store.read_state(conn, room_id)
        if state is None:
            state = WatchState(room_id=str(room_id), leader=await store.room_host(conn, room_id))
        return state

    async def rules_for(self, room_id: str) -> Rules:
        """The rules of a change in the room now: the start lead covers its slowest viewer (by heartbeats)."""
        s = self.settings
        beats = await self.board.beats(room_id, newer_than=self.clock() - s.watch_viewer_ttl_s)
        lead = core.start_lead(
            [b.rtt for b in beats if b.rtt is not None],
            minimum=s.watch_start_lead_s,
            maximum=s.watch_max_start_lead_s,
        )
        return Rules(start_lead=lead, max_playlist=s.watch_max_playlist)

    async def present_ids(self, room_id: str) -> list[str]:
        return [m.id for m in await self.presence.members(room_id)]

    # --- views and broadcast -------------------------------------------------------------------------

    async def locks(self, state: WatchState, user_ids: Collection[str]) -> LectureLocks:
        """Which of the playlist's lectures each of the users may not play (priced courses they did not buy)."""
        lectures = codec.lecture_ids(state)
        if not lectures:
            return NO_LOCKS
        async with self.core.pool.acquire() as conn:
            return await locked_lectures(conn, {uuid.UUID(i) for i in lectures}, {uuid.UUID(u) for u in user_ids})

    async def view_for(
        self, state: WatchState, user_id: str, *, cause: str = "sync", by: Person | None = None
    ) -> dict[str, Any]:
        """``watch:state`` as one user may see it: without the URLs of lectures they may not play."""
        locks = await self.locks(state, [user_id])
        return codec.state_view(state, cause=cause, by=by, locked=_ids(locks.of(uuid.UUID(user_id))))

    async def broadcast_state(self, state: WatchState, cause: str, by: Person | None) -> None:
        """``watch:state`` to the room, each viewer seeing only the lecture URLs they may play.

        With no paywalled lecture in the playlist (the usual case) that is one emit to the room. Otherwise
        the room as a whole gets the view with every paywalled lecture locked, so that a connection joining
        right now (not yet known here) is never handed a URL, and the connections of viewers entitled to
        more are skipped there and get their own view instead: one emit per distinct view.
        """
        room = socket_room(state.room_id)
        conns: list[tuple[str, str]] = []
        locks = await self.locks(state, ())  # no query without lectures; one without paywalled ones
        if locks.paywalled:
            conns = await self.presence.connections(state.room_id)
            locks = await self.locks(state, {user for _, user in conns})
        if not locks.paywalled:
            await self.transport.emit("watch:state", codec.state_view(state, cause=cause, by=by), to=room)
            return
        groups: dict[frozenset[uuid.UUID], list[str]] = {}
        for sid, user in conns:
            mine = locks.of(uuid.UUID(user))
            if mine != locks.paywalled:
                groups.setdefault(mine, []).append(sid)
        hidden = codec.state_view(state, cause=cause, by=by, locked=_ids(locks.paywalled))
        skip = [sid for sids in groups.values() for sid in sids]
        await self.transport.emit("watch:state", hidden, to=room, skip_sid=skip or None)
        for locked, sids in groups.items():
            view = codec.state_view(state, cause=cause, by=by, locked=_ids(locked))
            await self.transport.emit("watch:state", view, to=sids)

    async def publish(self, old: WatchState, new: WatchState, cause: str, by: Person | None) -> None:
        """After commit: ``watch:state`` if the version moved, ``watch:readiness`` if readiness did."""
        self.remember(new)
        room = socket_room(new.room_id)
        if new.version != old.version:
            await self.broadcast_state(new, cause, by)
        if new.ready_rev != old.ready_rev or new.ready_check != old.ready_check or new.current != old.current:
            present = await self.present_ids(new.room_id)
            await self.transport.emit("watch:readiness", codec.readiness_view(new, present), to=room)

    # --- upkeep --------------------------------------------------------------------------------------

    async def tick(self, room_id: str) -> WatchState:
        """Apply :func:`watch_party.core.tick` under the row lock and broadcast what changed."""
        present = await self.present_ids(room_id)
        rules = await self.rules_for(room_id)
        key = uuid.UUID(room_id)
        async with self.core.transaction() as tx:
            state = await store.lock_state(tx.conn, key)
            viewers = await store.viewers(tx.conn, key, present)
            new = core.tick(state, Context(now=self.clock(), present=viewers, rules=rules))
            if new is not state:
                await store.save_state(tx.conn, new)
        if new is not state:
            await self.publish(state, new, _tick_cause(state, new), None)
        else:
            self.remember(new)
        return new

    async def upkeep(self) -> None:
        """One beat over the rooms local connections used within the viewer TTL."""
        horizon = time.monotonic() - self.settings.watch_viewer_ttl_s
        self.progress.prune(older_than_s=3600)
        for room_id in [r for r in self.cache if r not in self._active]:
            del self.cache[room_id]
        for room_id, seen in list(self._active.items()):
            if seen < horizon:
                del self._active[room_id]
                self.cache.pop(room_id, None)
                self._loaded.pop(room_id, None)
                continue
            try:
                await self.check(room_id)
            except Exception:
                log.exception("watch upkeep of room %s failed", room_id)

    async def check(self, room_id: str) -> None:
        """Re-read the room's row and tick it if anything is due."""
        present = await self.present_ids(room_id)
        async with self.core.pool.acquire() as conn:
            state = await store.read_state(conn, uuid.UUID(room_id))
        if state is None:
            return
        self.remember(state)
        if core.needs_tick(state, self.clock(), present):
            await self.tick(room_id)

    async def run(self) -> None:
        """The upkeep loop; the app owns it (started and cancelled in a ``cleanup_ctx``)."""
        while True:
            await asyncio.sleep(self.settings.watch_upkeep_s)
            try:
                await self.upkeep()
            except Exception:
                log.exception("watch upkeep failed; retrying on the next beat")

    def _time_end(self, state: WatchState) -> None:
        ends = state.ends_at()
        timer = self._timers.get(state.room_id)
        if timer is not None and timer[0] == ends:
            return
        if timer is not None:
            timer[1].cancel()
            del self._timers[state.room_id]
        if ends is None or self._closed:
            return
        task = asyncio.create_task(self._at_end(state.room_id, ends))
        self._timers[state.room_id] = (ends, task)

    async def _at_end(self, room_id: str, ends: float) -> None:
        await asyncio.sleep(max(0.0, ends - self.clock()))
        with contextlib.suppress(KeyError):
            if self._timers[room_id][0] == ends:
                del self._timers[room_id]
        try:
            await self.tick(room_id)
        except Exception:
            log.exception("advancing room %s at the end of its item failed", room_id)


def _ids(lectures: Collection[uuid.UUID]) -> set[str]:
    return {str(i) for i in lectures}


def _tick_cause(old: WatchState, new: WatchState) -> str:
    if new.current != old.current or (old.playing and not new.playing):
        return "advance"
    if new.playing and not old.playing:
        return "ready"
    if new.leader != old.leader:
        return "leader"
    return "upkeep"
