"""Watching a lecture together: viewers' heartbeats become their resume points and the evidence that they
watched it.

When the playing item is a lecture (media loaded by ``lecture_id``):

- **Evidence.** A viewer is seen watching while the room plays the lecture and their heartbeats say
  they play in step with it (within :data:`IN_STEP_S` of the room's position) at a rate of at most
  ``STUDYHALL_PROGRESS_MAX_RATE``. Between two such heartbeats of one connection, no further apart than
  ``STUDYHALL_WATCH_VIEWER_TTL_S`` and with the room's state unchanged in between, the viewer is credited
  the *room's* timeline — the server's own clock and state, not what the client claims. The stretches
  are merged per viewer and lecture here and handed to the progress service
  (:func:`core_api.progress.record_watching`), which stores them and completes the lecture once they
  cover enough of it.
- **Writes** go through that service at most every ``watch_progress_interval_s`` per viewer and lecture
  while the position moves, at once when they pause or get near the end, and a last time when they
  disconnect. Viewers who are not enrolled (the service answers ``forbidden``) are left alone for
  :data:`RETRY_NOT_ENROLLED_S`, then tried again (they may have enrolled meanwhile).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from core_api import watching
from core_api.context import Core
from core_api.errors import AppError, ErrorCode
from core_api.http import Principal
from core_api.progress import record_watching
from core_api.watching import Interval
from watch_party.core import WatchState

log = logging.getLogger(__name__)

RETRY_NOT_ENROLLED_S = 300.0
MIN_MOVE_S = 1.0
"""Positions closer than this to the last written one are not written again."""
IN_STEP_S = 5.0
"""A viewer whose player is further than this from the room's is not counted as watching with it."""


@dataclass
class _Written:
    at: float
    position: float
    playing: bool
    near_end: bool


@dataclass
class _Seen:
    """A viewer's latest position on a lecture and the evidence not yet written."""

    user: Principal
    lecture_id: str
    position: float
    near_end: bool
    at: float
    stretches: list[Interval] = field(default_factory=list)
    since: float | None = None
    """Server time the oldest unwritten stretch began."""


@dataclass(frozen=True)
class _Step:
    """A connection's last heartbeat in step with the room: when, where the room was, which state."""

    at: float
    expected: float
    item: str | None
    version: int


class ProgressWriter:
    """Turns heartbeats into evidence and resume points; the writes run as the node's background tasks.

    Args:
        core: for the progress service.
        interval_s: shortest time between two writes of one viewer and lecture while playing.
        spawn: runs a coroutine in the background (the node's owned tasks).
        max_gap_s: two heartbeats further apart than this show nothing watched between them.
        clock: server time (the node's clock), the one heartbeats are timed with.
    """

    def __init__(
        self,
        core: Core,
        interval_s: float,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        *,
        max_gap_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = core
        self.interval_s = interval_s
        self.max_gap_s = max_gap_s
        self.max_intervals = core.settings.progress_max_intervals
        self.clock = clock
        self._spawn = spawn
        self._written: dict[tuple[str, str], _Written] = {}
        self._skip: dict[tuple[str, str], float] = {}
        self._last: dict[tuple[str, str], _Seen] = {}
        self._steps: dict[str, _Step] = {}

    def seen(self, user: Principal, connection: str, state: WatchState, position: float, playing: bool,
             sampled_at: float, at: float) -> None:  # fmt: skip
        """A heartbeat of ``user`` on ``connection``: their player at ``position`` (sampled at server time
        ``sampled_at``), received at server time ``at`` while ``state`` is the room's."""
        media = state.media
        if media is None or media.lecture_id is None:
            self._steps.pop(connection, None)
            return
        stretch = self._step(connection, state, position, playing, sampled_at, at)
        key = (str(user.id), media.lecture_id)
        now = time.monotonic()
        last = self._last.get(key)
        if last is None:
            last = self._last[key] = _Seen(user, media.lecture_id, position, False, now)
        if stretch is not None:
            start, end, began = stretch
            last.stretches = watching.add(last.stretches, [(start, end)], max_intervals=self.max_intervals)
            last.since = began if last.since is None else min(last.since, began)
        if now < self._skip.get(key, 0.0):
            return
        share = self.core.settings.progress_complete_share
        near_end = media.duration is not None and position >= share * media.duration
        last.user, last.position, last.near_end, last.at = user, position, near_end, now
        written = self._written.get(key)
        moved = written is None or abs(position - written.position) >= MIN_MOVE_S
        changed = moved or bool(last.stretches)  # a new position, or evidence to store
        due = (
            written is None
            or (near_end and not written.near_end)
            or (changed and (now - written.at >= self.interval_s or (written.playing and not playing)))
        )
        if due:
            self._written[key] = _Written(
                now, position, playing, near_end or (written is not None and written.near_end)
            )
            self._write(key, last)

    def _step(self, connection: str, state: WatchState, position: float, playing: bool, sampled_at: float,
              at: float) -> tuple[float, float, float] | None:  # fmt: skip
        """The stretch of the room's timeline this heartbeat shows watched, with the server time it began."""
        expected = state.position_at(at)
        in_step = (
            playing
            and state.playing
            and at >= state.server_time
            and state.rate <= self.core.settings.progress_max_rate
            and abs(position - state.position_at(sampled_at)) <= IN_STEP_S
        )
        previous = self._steps.pop(connection, None)
        if not in_step:
            return None
        self._steps[connection] = _Step(at, expected, state.current, state.version)
        if (
            previous is None
            or previous.item != state.current
            or previous.version != state.version
            or not 0 < at - previous.at <= self.max_gap_s
            or expected <= previous.expected
        ):
            return None
        return (previous.expected, expected, previous.at)

    def flush(self, user_id: str) -> None:
        """The user left: write their last positions and evidence that were not written yet."""
        for key, last in list(self._last.items()):
            if key[0] != user_id:
                continue
            del self._last[key]
            written = self._written.pop(key, None)
            if last.stretches or written is None or abs(written.position - last.position) >= MIN_MOVE_S:
                self._write(key, last)

    def forget(self, connection: str) -> None:
        """A connection closed: its last heartbeat starts no stretch any more."""
        self._steps.pop(connection, None)

    def _write(self, key: tuple[str, str], seen: _Seen) -> None:
        stretches = [(a, b) for a, b in seen.stretches]
        seen_over = self.clock() - seen.since if seen.since is not None else 0.0
        seen.stretches, seen.since = [], None
        self._spawn(self._record(key, seen.user, seen.lecture_id, seen.position, stretches, seen_over))

    async def _record(
        self,
        key: tuple[str, str],
        user: Principal,
        lecture_id: str,
        position: float,
        stretches: list[Interval],
        seen_over: float,
    ) -> None:
        try:
            await record_watching(self.core, user, uuid.UUID(lecture_id), position, stretches, seen_over)
        except AppError as exc:
            if exc.code not in (ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND):
                raise
            self._skip[key] = time.monotonic() + RETRY_NOT_ENROLLED_S
            self._written.pop(key, None)

    def prune(self, older_than_s: float) -> None:
        """Forget viewers not seen for a while (the tables would only grow)."""
        now = time.monotonic()
        horizon = now - older_than_s
        for key in [k for k, w in self._written.items() if w.at < horizon]:
            del self._written[key]
        for key in [k for k, seen in self._last.items() if seen.at < horizon]:
            del self._last[key]
        for key in [k for k, until in self._skip.items() if until < now]:
            del self._skip[key]
        stale = self.clock() - max(older_than_s, self.max_gap_s)
        for connection in [c for c, step in self._steps.items() if step.at < stale]:
            del self._steps[connection]
