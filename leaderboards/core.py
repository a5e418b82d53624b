"""Scoring, pure: attempts in, standings out (no I/O, no clock).

The rules (DOMjudge / ICPC):

- A problem is solved by its first accepted attempt. Its penalty is the minutes from the contest's start
  to that attempt plus ``penalty_minutes`` (20) for every rejected attempt before it. Compile errors and
  internal errors (the judge's fault, never the contestant's) cost nothing. Attempts after the solve
  do not count. Unsolved problems cost nothing.
- ``icpc``: the score is the number of problems solved; ``points``: the sum of the solved problems'
  points. Both rank by score (higher first), then penalty (lower first). Equal score and penalty share a
  rank (1, 2, 2, 4); within a tie rows are listed by display name, then id, only to be stable.
- First to solve: the earliest accepted attempt of each problem among the attempts this view can see.
- Freeze: in the public view of a contest that is not finalised, every attempt made at or after the
  freeze time shows as pending (its result hidden); the jury view and a finalised contest show all.
- A community's score is the sum of its members' scores and its penalty the sum of their penalties (a
  member is counted for the community they submitted for); it ranks by the same rule as people.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Scoring = Literal["icpc", "points"]
View = Literal["public", "jury"]

ACCEPTED = "accepted"
FREE_VERDICTS = frozenset({"compile_error", "internal_error"})
PENALTY_SCALE = 1_000_000_000  # board score = score * PENALTY_SCALE - penalty (penalties stay below it)


@dataclass(frozen=True)
class Attempt:
    """One stored submission as scoring sees it; ``verdict`` is ``None`` while it waits for the judge."""

    id: str
    problem_id: str
    user_id: str
    community_id: str
    submitted_at: datetime
    minute: int
    verdict: str | None


@dataclass(frozen=True)
class Rules:
    scoring: Scoring
    penalty_minutes: int
    points: dict[str, int]  # problem id -> points
    freeze_at: datetime | None
    finalised: bool


@dataclass
class Cell:
    """One person's standing on one problem."""

    problem_id: str
    solved: bool = False
    minute: int | None = None
    rejected: int = 0
    pending: int = 0
    first_to_solve: bool = False
    solved_by: str = ""  # the accepted attempt's id


@dataclass
class Standing:
    id: str
    name: str
    score: int = 0
    penalty: int = 0
    solved: int = 0
    rank: int = 0
    community_id: str | None = None
    cells: dict[str, Cell] = field(default_factory=dict)


def hides(rules: Rules, view: View, attempt: Attempt) -> bool:
    """Whether this view sees ``attempt`` as pending whatever its verdict (the freeze)."""
    return (
        view == "public" and not rules.finalised and rules.freeze_at is not None
        and attempt.submitted_at >= rules.freeze_at
    )  # fmt: skip


def rank_rows(rows: list[Standing]) -> list[Standing]:
    """Sort by score, then penalty, and give equal (score, penalty) the same rank."""
    rows.sort(key=lambda s: (-s.score, s.penalty, s.name, s.id))
    for i, row in enumerate(rows):
        same = i > 0 and (rows[i - 1].score, rows[i - 1].penalty) == (row.score, row.penalty)
        row.rank = rows[i - 1].rank if same else i + 1
    return rows


def standings(
    rules: Rules,
    view: View,
    attempts: list[Attempt],
    names: dict[str, str],
) -> list[Standing]:
    """People's standings from their attempts (in any order), for ``view``; ``names`` maps user id to name."""
    people: dict[str, Standing] = {}
    first: dict[str, Attempt] = {}
    for a in sorted(attempts, key=lambda a: (a.submitted_at, a.id)):
        if a.user_id not in people:
            people[a.user_id] = Standing(a.user_id, names.get(a.user_id, ""), community_id=a.community_id)
        person = people[a.user_id]
        cell = person.cells.setdefault(a.problem_id, Cell(a.problem_id))
        if cell.solved:
            continue
        if a.verdict is None or hides(rules, view, a):
            cell.pending += 1
        elif a.verdict == ACCEPTED:
            cell.solved, cell.minute, cell.solved_by = True, a.minute, a.id
            first.setdefault(a.problem_id, a)
        elif a.verdict not in FREE_VERDICTS:
            cell.rejected += 1
    for person in people.values():
        for cell in person.cells.values():
            if cell.solved:
                assert cell.minute is not None
                person.solved += 1
                person.score += 1 if rules.scoring == "icpc" else rules.points.get(cell.problem_id, 0)
                person.penalty += cell.minute + rules.penalty_minutes * cell.rejected
                cell.first_to_solve = first[cell.problem_id].id == cell.solved_by
    return rank_rows(list(people.values()))


def community_standings(people: list[Standing], communities: dict[str, str]) -> list[Standing]:
    """Communities' standings: each one's members summed (``communities`` maps id to name, all taking part)."""
    rows = {cid: Standing(cid, name) for cid, name in communities.items()}
    for person in people:
        row = rows.get(person.community_id or "")
        if row is not None:
            row.score += person.score
            row.penalty += person.penalty
            row.solved += person.solved
    return rank_rows(list(rows.values()))


def board_score(score: int, penalty: int) -> float:
    """One number that orders like (score desc, penalty asc): what a sorted set holds."""
    return float(score * PENALTY_SCALE - penalty)


def split_board_score(value: float) -> tuple[int, int]:
    """``board_score`` back into (score, penalty)."""
    composite = int(value)
    score = -(-composite // PENALTY_SCALE)
    return score, score * PENALTY_SCALE - composite
