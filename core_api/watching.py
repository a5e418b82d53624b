"""What counts as having watched a lecture: the pure rules (no I/O, the clock passed in).

A lecture is completed from evidence the server saw, never from a client's word. Evidence is a stretch
of the lecture ``[start, end]`` (seconds of media) that a learner was seen playing:

- **Position reports** (``PUT /lectures/{id}/progress``): two consecutive reports of one learner on one
  lecture, ``p1`` at server time ``t1`` then ``p2`` at ``t2``, show ``[p1, p2]`` watched when the
  position moved forward by no more than ``max_rate × (t2 − t1)`` (:func:`report_stretch`). A jump
  further than that (a seek, or a lie) shows nothing; a move backwards shows nothing either.
- **Watch parties**: while the room plays a lecture, a viewer whose heartbeats say they play in step
  with the room is credited the room's own timeline between two heartbeats (watch_party/progress.py).

Stretches are merged into sorted, disjoint intervals per learner and lecture (:func:`add`), so
re-watching a part counts it once; a lecture is complete once they cover ``share`` of its duration
(:func:`is_complete`). Across all their lectures, one learner cannot be credited more media time than
``max_rate ×`` the wall-clock time it took (:func:`charge`): watching ten lectures "at once" does not
watch them ten times faster. A lecture without a duration (0: unknown, e.g. a live stream) has nothing
to measure: it counts as completed once the learner has opened it (reported a position on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Interval = tuple[float, float]

EPSILON = 1e-6
"""Float slack when comparing seconds (a stretch exactly at the limit is within it)."""


def report_stretch(
    previous_position: float | None, previous_at: float | None, position: float, now: float, max_rate: float
) -> Interval | None:
    """The stretch two consecutive position reports show watched, or None.

    Args:
        previous_position, previous_at: the learner's previous report on this lecture (server time, s).
        position, now: this report and the server time it arrived.
        max_rate: the fastest playback that still counts as watching.
    """
    if previous_position is None or previous_at is None:
        return None
    elapsed = now - previous_at
    moved = position - previous_position
    if elapsed <= 0 or moved <= 0 or moved > elapsed * max_rate + EPSILON:
        return None
    return (previous_position, position)


def clamp(stretch: Interval, duration: float) -> Interval | None:
    """``stretch`` within the lecture ``[0, duration]``; None if nothing of it is left."""
    start, end = max(0.0, stretch[0]), min(duration, stretch[1])
    return (start, end) if end > start else None


def covered(intervals: Iterable[Interval]) -> float:
    """Seconds covered by disjoint intervals."""
    return sum(end - start for start, end in intervals)


def add(intervals: Sequence[Interval], stretches: Iterable[Interval], *, max_intervals: int) -> list[Interval]:
    """Merge ``stretches`` into the sorted, disjoint ``intervals``.

    A stretch that would leave more than ``max_intervals`` separate intervals is dropped (honest viewing
    leaves a handful; thousands of specks only cost storage), so the stored evidence stays small.
    """
    merged = list(intervals)
    for stretch in stretches:
        candidate = _merge_one(merged, stretch)
        if len(candidate) <= max_intervals:
            merged = candidate
    return merged


def _merge_one(intervals: list[Interval], stretch: Interval) -> list[Interval]:
    start, end = stretch
    out: list[Interval] = []
    placed = False
    for a, b in intervals:
        if b < start:
            out.append((a, b))
        elif a > end:
            if not placed:
                out.append((start, end))
                placed = True
            out.append((a, b))
        else:  # overlapping or touching: absorb
            start, end = min(a, start), max(b, end)
    if not placed:
        out.append((start, end))
    return out


def charge(clock: float, started_at: float, now: float, gained: float, max_rate: float) -> float | None:
    """A learner's watch clock after crediting ``gained`` seconds of newly covered media, or None if no one
    could have watched that much by ``now``.

    The clock is the wall time up to which the learner's credited watching is accounted for. Watching that
    began at ``started_at`` can be credited from ``max(clock, started_at)`` on, at ``max_rate``.
    """
    begin = max(clock, started_at)
    end = begin + gained / max_rate
    return end if end <= now + EPSILON else None


def is_complete(watched_s: float, duration_s: float, share: float) -> bool:
    """Whether ``watched_s`` seconds of a ``duration_s`` lecture complete it (any report does, without a
    duration)."""
    return duration_s <= 0 or watched_s >= share * duration_s - EPSILON


def flatten(intervals: Iterable[Interval]) -> list[float]:
    """Intervals as stored: ``[start0, end0, start1, end1, ...]`` (one float array per learner and lecture)."""
    return [x for interval in intervals for x in interval]


def unflatten(stored: Sequence[float] | None) -> list[Interval]:
    if not stored:
        return []
    return [(float(stored[i]), float(stored[i + 1])) for i in range(0, len(stored) - 1, 2)]
