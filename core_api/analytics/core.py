"""Pure rules of the dashboards: day series with the missing days filled in, drop-off and retention of a
lecture from its reach buckets, rounding."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

REACH_BUCKETS = 20
"""A lecture's drop-off histogram: twentieths of its duration (migration 0034, analytics_reach_bucket)."""
SCORE_BUCKETS = 10
"""A score histogram: tenths of the maximum, bucket 9 holding 90-100 % (analytics_score_bucket)."""


def days_between(since: date, until: date) -> list[date]:
    """Every day from ``since`` to ``until``, both included."""
    return [since + timedelta(days=i) for i in range((until - since).days + 1)]


def week_of(day: date) -> date:
    """The Monday starting ``day``'s week (weeks as the rollups count them)."""
    return day - timedelta(days=day.weekday())


def weeks_between(since: date, until: date) -> list[date]:
    """The Mondays of every week touching ``since`` .. ``until``."""
    first, last = week_of(since), week_of(until)
    return [first + timedelta(weeks=i) for i in range((last - first).days // 7 + 1)]


def fill(keys: list[date], values: Mapping[date, int]) -> list[int]:
    """``values`` at each key, 0 where there is none."""
    return [int(values.get(k, 0)) for k in keys]


def cumulative(start: int, values: list[int]) -> list[int]:
    out, total = [], start
    for v in values:
        total += v
        out.append(total)
    return out


def buckets(counts: Mapping[int, int], size: int) -> list[int]:
    return [int(counts.get(i, 0)) for i in range(size)]


def retention(reach: list[int]) -> list[float]:
    """Share of the learners who got at least to the start of each bucket (1.0 at bucket 0 when anyone did),
    from how many stopped furthest in each bucket."""
    total = sum(reach)
    if total == 0:
        return [0.0] * len(reach)
    out, remaining = [], total
    for n in reach:
        out.append(round(remaining / total, 4))
        remaining -= n
    return out


def drop_off(reach: list[int]) -> int | None:
    """The bucket where most learners stopped before the last one (the lecture's end); the earliest of a tie.
    None when nobody stopped before the last bucket."""
    before_end = reach[:-1]
    most = max(before_end, default=0)
    return before_end.index(most) if most > 0 else None


def seconds(value: float) -> float:
    """Seconds as the dashboards show them: to a tenth (sums of floats carry rounding noise)."""
    return round(value + 0.0, 1)


def share(part: int, whole: int) -> float:
    """``part / whole`` to four places; 0 for an empty whole."""
    return round(part / whole, 4) if whole else 0.0
