"""One room event delivered in its sequence order on every node: ``chat:message`` by ``seq``.

Each ``chat:send`` emits after its own commit, so two messages sent at once can reach a node's fan-out
in either order: from two handlers on one node, or from two nodes through Redis pub/sub. A client that
remembers the last ``seq`` it saw and asks for what came after it when it reconnects would then skip the
one that was overtaken. So every node delivers each room's ordered event strictly in ``seq`` order,
exactly once, as Centrifugo delivers a channel's publications by their offsets:

- **Where a node starts.** A node follows a room while one of its connections joined it
  (:meth:`OrderedRooms.enter`). The first such connection sets the node's position from the room's last
  committed ``seq`` (read from Postgres by the join); a later one joins the node's current position. The
  join answers the history up to that position, so the joiner gets everything before it once (history)
  and everything after it once (live), whatever was in flight at the time. A connection that rejoins
  holding more than this node delivered so far (it was on another node, ahead of this one, when that
  node died) says up to where it holds the room (``after``): it is skipped for the live events up to
  there, so it is not sent again what it already has.
- **In order.** An event with the next ``seq`` is delivered, then any that were waiting behind it; one
  from further ahead waits; one at or below the position already went out (or came in the history) and is
  dropped, which also drops duplicates (a message filled from Postgres and then arriving late).
- **Gaps.** A node that holds an event from ahead waits ``STUDYHALL_CHAT_GAP_WAIT_S`` for the missing
  ones, then reads them from Postgres and delivers them in order. ``seq`` is gap-free among committed
  messages, so whatever is missing below a message that arrived has been committed and can be read.
- **Lost publications.** A message whose node died between its commit and its publish (or one Redis
  dropped while a subscription reconnected) leaves a gap nobody notices if no later message arrives.
  Every ``STUDYHALL_CHAT_POSITION_CHECK_S`` a node reads the committed position of every room it follows
  (one query) and treats a room that is behind like a gap.
- **Memory.** A room nobody on this node follows any more is forgotten at its next event or check:
  nothing is kept for it, and its events are not even decoded past the room lookup.

Nothing is ever delivered out of order or skipped while it can be read from Postgres; if a fill fails
(Postgres unreachable) the node keeps what waits and tries again after the next wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

FILL_PAGE = 500
"""Most events read from Postgres per query when filling a gap."""


class OrderSource(Protocol):
    """Where the ordered events are stored (the rooms package reads chat messages for it)."""

    async def positions(self, rooms: Sequence[str]) -> dict[str, int]:
        """The last committed ``seq`` of each room (Socket.IO room names, ``room:<id>``)."""
        ...

    async def between(self, room: str, first: int, last: int, limit: int) -> list[dict[str, Any]]:
        """The room's events with ``first <= seq <= last`` in ascending ``seq``, at most ``limit`` of them,
        as the live event carries them."""
        ...


@dataclass
class _Stream:
    """One followed room on this node."""

    next: int
    """The ``seq`` this node delivers next; everything below it went out (or was in joiners' history)."""
    known: int = 0
    """The highest ``seq`` known to be committed (from an event that arrived, or a position check)."""
    waiting: dict[int, Any] = field(default_factory=dict)
    holds: dict[str, int] = field(default_factory=dict)
    """Connections that joined holding the room up to a ``seq`` this node had not delivered yet: skipped
    for the live events up to it."""
    timer: asyncio.TimerHandle | None = None
    draining: bool = False
    filling: bool = False


class OrderedRooms:
    """Delivers one event type per room in ``seq`` order on this node (see the module docstring).

    Args:
        deliver: ``async (event, room, payload, skip)`` that writes the event to the room's local connections
            now, except the sids in ``skip`` (a list, usually empty).
        has_members: whether any local connection sits in the room.
        enter: puts a local connection into the room (synchronously, so no delivery can come between
            fixing the connection's position and its entering).
        gap_wait_s: how long a gap may stay open before it is filled from the source.
        check_s: how often the positions of the followed rooms are compared with the source's.
    """

    def __init__(
        self,
        deliver: Callable[[str, str, Any, list[str]], Awaitable[None]],
        has_members: Callable[[str], bool],
        enter: Callable[[str, str], bool],
        *,
        gap_wait_s: float,
        check_s: float,
    ) -> None:
        self.event = ""
        self.source: OrderSource | None = None
        self._deliver = deliver
        self._has_members = has_members
        self._enter = enter
        self.gap_wait_s = gap_wait_s
        self.check_s = check_s
        self._streams: dict[str, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.filled = 0
        """Events this node read from the source because they had not arrived in time."""
        self.dropped = 0
        """Events that arrived at or below the room's position (already delivered, or in the history)."""

    def follow(self, event: str, source: OrderSource) -> None:
        """Order ``event`` (its payload's ``seq``) per room from now on; ``source`` fills gaps."""
        self.event = event
        self.source = source

    @property
    def rooms(self) -> int:
        """How many rooms this node follows."""
        return len(self._streams)

    # --- joining -------------------------------------------------------------------------------------

    def enter(self, sid: str, room: str, committed: int, after: int | None = None) -> int:
        """Put connection ``sid`` into ``room``; the last ``seq`` it will *not* be sent live.

        ``committed`` is the room's last committed ``seq`` read by the caller; it becomes this node's
        position if nobody here follows the room yet. The caller answers the connection with the history
        up to the returned ``seq``; everything after it arrives live, in order. ``after``: the connection
        already holds everything up to this ``seq`` (a rejoin); if that is beyond the returned ``seq``, the
        live events up to ``after`` are not sent to it.
        """
        stream = self._streams.get(room)
        if stream is not None and not self._has_members(room):
            self._forget(room)  # left over from earlier members: its position may be stale
            stream = None
        if stream is None:
            stream = self._streams[room] = _Stream(next=committed + 1, known=committed)
        if not self._enter(sid, room):
            if not self._has_members(room):
                self._forget(room)  # the connection is gone
            return stream.next - 1
        if after is not None and after >= stream.next:
            stream.holds[sid] = after
        else:
            stream.holds.pop(sid, None)  # an earlier join's, on this connection
        return stream.next - 1

    # --- events --------------------------------------------------------------------------------------

    def ordered(self, event: str) -> bool:
        return bool(self.event) and event == self.event

    async def offer(self, room: str, payload: Any) -> None:
        """An event for ``room`` reached this node's fan-out: deliver it in order (now, or once the
        events before it are here)."""
        stream = self._streams.get(room)
        seq = payload.get("seq") if isinstance(payload, dict) else None
        if stream is None or not isinstance(seq, int):
            if self._has_members(room):  # connections that entered without a position: as it comes
                await self._deliver(self.event, room, payload, [])
            return
        if not self._has_members(room):
            self._forget(room)
            return
        if seq < stream.next or seq in stream.waiting:
            self.dropped += 1
            return
        stream.waiting[seq] = payload
        stream.known = max(stream.known, seq)
        await self._drain(room, stream)

    async def _drain(self, room: str, stream: _Stream) -> None:
        """Deliver what is next in line; arm the gap timer if something is still missing."""
        if stream.draining:
            return  # the drain already running picks it up
        stream.draining = True
        try:
            while stream.next in stream.waiting:
                seq = stream.next
                payload = stream.waiting.pop(seq)
                stream.next += 1
                skip: list[str] = []
                if stream.holds:
                    skip = [sid for sid, held in stream.holds.items() if held >= seq]
                    stream.holds = {sid: held for sid, held in stream.holds.items() if held > seq}
                await self._deliver(self.event, room, payload, skip)
                if self._streams.get(room) is not stream:
                    return
        finally:
            stream.draining = False
        self._watch_gap(room, stream)

    def _watch_gap(self, room: str, stream: _Stream) -> None:
        behind = bool(stream.waiting) or stream.known >= stream.next
        if not behind:
            if stream.timer is not None:
                stream.timer.cancel()
                stream.timer = None
        elif stream.timer is None:
            stream.timer = asyncio.get_running_loop().call_later(self.gap_wait_s, self._gap_expired, room, stream)

    def _gap_expired(self, room: str, stream: _Stream) -> None:
        stream.timer = None
        if self._streams.get(room) is stream:
            self._spawn(self._fill(room, stream))

    async def _fill(self, room: str, stream: _Stream) -> None:
        """Read what is missing below the waiting events (or up to the known position) and deliver it."""
        if stream.filling or self.source is None:
            return
        if not self._has_members(room):
            self._forget(room)
            return
        stream.filling = True
        try:
            first = stream.next
            last = (min(stream.waiting) - 1) if stream.waiting else stream.known
            while first <= last and self._streams.get(room) is stream:
                rows = await self.source.between(room, first, last, FILL_PAGE)
                seqs = [int(row["seq"]) for row in rows]
                lowest = seqs[0] if seqs else last + 1
                if first <= stream.next < lowest and stream.next not in stream.waiting:
                    # Not in the store although later ones are committed (deleted with its room): there is
                    # nothing a client could be sent. Skip it rather than wait for it forever.
                    log.warning("%s: seq %d..%d not in the store; skipped", room, stream.next, lowest - 1)
                    stream.next = lowest
                for seq, row in zip(seqs, rows, strict=True):
                    if seq >= stream.next and seq not in stream.waiting:
                        stream.waiting[seq] = row
                        self.filled += 1
                await self._drain(room, stream)
                first = seqs[-1] + 1 if len(rows) >= FILL_PAGE else last + 1
        except Exception:
            log.exception("could not fill the gap in %s at seq %d; retrying", room, stream.next)
        finally:
            stream.filling = False
        if self._streams.get(room) is stream:
            self._watch_gap(room, stream)

    # --- the position check --------------------------------------------------------------------------

    async def check(self) -> None:
        """Compare the followed rooms' positions with the source's; a room behind is treated as a gap."""
        if self.source is None:
            return
        for room in [r for r in self._streams if not self._has_members(r)]:
            self._forget(room)
        rooms = list(self._streams)
        if not rooms:
            return
        positions = await self.source.positions(rooms)
        for room, last in positions.items():
            stream = self._streams.get(room)
            if stream is not None and last >= stream.next:
                stream.known = max(stream.known, last)
                self._watch_gap(room, stream)

    async def run(self) -> None:
        """Check positions every ``check_s`` until cancelled (the app owns this task)."""
        while True:
            await asyncio.sleep(self.check_s)
            try:
                await self.check()
            except Exception:
                log.exception("chat position check failed; retrying in %.1f s", self.check_s)

    # --- housekeeping --------------------------------------------------------------------------------

    def _forget(self, room: str) -> None:
        stream = self._streams.pop(room, None)
        if stream is not None and stream.timer is not None:
            stream.timer.cancel()

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for room in list(self._streams):
            self._forget(room)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
