"""Resume points from watching together: a viewer's heartbeats on a course lecture become their progress.

When the playing item is a lecture (media loaded by ``lecture_id``), each viewer's heartbeat positions
are written through the core progress service (:func:`core_api.enrollments.record_progress`, the same
rules as ``PUT /lectures/{id}/progress``): at most every ``watch_progress_interval_s`` per viewer and
lecture while the position moves, at once when they pause or reach the end, and a last time when they
disconnect. Reaching :data:`COMPLETED_AT` of the lecture marks it completed. Viewers who are not enrolled
(the service answers ``forbidden``) are left alone for :data:`RETRY_NOT_ENROLLED_S`, then tried again
(they may have enrolled meanwhile).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from core_api.context import Core
from core_api.enrollments import ProgressIn, record_progress
from core_api.errors import AppError, ErrorCode
from core_api.http import Principal
from watch_party.core import Media

log = logging.getLogger(__name__)

COMPLETED_AT = 0.95
"""Share of a lecture after which watching it counts as completing it."""
RETRY_NOT_ENROLLED_S = 300.0
MIN_MOVE_S = 1.0
"""Positions closer than this to the last written one are not written again."""


@dataclass
class _Written:
    at: float
    position: float
    playing: bool
    completed: bool


@dataclass
class _Seen:
    user: Principal
    lecture_id: str
    position: float
    completed: bool
    at: float


class ProgressWriter:
    """Decides when a viewer's position is worth writing; the writes run as the node's background tasks.

    Args:
        core: for the progress service.
        interval_s: shortest time between two writes of one viewer and lecture while playing.
        spawn: runs a coroutine in the background (the node's owned tasks).
    """

    def __init__(self, core: Core, interval_s: float, spawn: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self.core = core
        self.interval_s = interval_s
        self._spawn = spawn
        self._written: dict[tuple[str, str], _Written] = {}
        self._skip: dict[tuple[str, str], float] = {}
        self._last: dict[tuple[str, str], _Seen] = {}

    def seen(self, user: Principal, media: Media | None, position: float, playing: bool) -> None:
        """A heartbeat of ``user`` at ``position`` while ``media`` is the current item."""
        if media is None or media.lecture_id is None:
            return
        key = (str(user.id), media.lecture_id)
        now = time.monotonic()
        if now < self._skip.get(key, 0.0):
            return
        completed = media.duration is not None and position >= COMPLETED_AT * media.duration
        self._last[key] = _Seen(user, media.lecture_id, position, completed, now)
        last = self._written.get(key)
        moved = last is None or abs(position - last.position) >= MIN_MOVE_S
        due = (
            last is None
            or (completed and not last.completed)
            or (moved and (now - last.at >= self.interval_s or (last.playing and not playing)))
        )
        if due:
            self._written[key] = _Written(now, position, playing, completed or (last is not None and last.completed))
            self._write(key, user, media.lecture_id, position, completed)

    def flush(self, user_id: str) -> None:
        """The user left: write their last positions that were not written yet."""
        for key, last in list(self._last.items()):
            if key[0] != user_id:
                continue
            del self._last[key]
            written = self._written.pop(key, None)
            if written is None or abs(written.position - last.position) >= MIN_MOVE_S:
                self._write(key, last.user, last.lecture_id, last.position, last.completed)

    def _write(self, key: tuple[str, str], user: Principal, lecture_id: str, position: float, completed: bool) -> None:
        self._spawn(self._record(key, user, lecture_id, position, completed))

    async def _record(
        self, key: tuple[str, str], user: Principal, lecture_id: str, position: float, completed: bool
    ) -> None:
        try:
            await record_progress(
                self.core, user, uuid.UUID(lecture_id), ProgressIn(position_s=position, completed=completed)
            )
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
