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
- Each attempt scores for the community it names: standings have one row per (person, community), scored
  from that person's attempts for that community alone (a member of two communities who submits for both
  has two rows, and a problem solved for one is not solved for the other). A community's score is the
  sum of its rows' scores and its penalty the sum of their penalties; it ranks by the same rule as rows.
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


def row_order(row: Standing) -> tuple[int, int, str, str, str]:
    """Where a row sorts: score (higher first), penalty (lower first), then name, id and community only
    to be stable."""
    return (-row.score, row.penalty, row.name, row.id, row.community_id or "")


def rank_rows(rows: list[Standing]) -> list[Standing]:
    """Sort by score, then penalty, and give equal (score, penalty) the same rank."""
    rows.sort(key=row_order)
    for i, row in enumerate(rows):
        same = i > 0 and (rows[i - 1].score, rows[i - 1].penalty) == (row.score, row.penalty)
        row.rank = rows[i - 1].rank if same else i + 1
    return rows


def attempt_order(attempt: Attempt) -> tuple[datetime, str]:
    """The order attempts are scored in: when they were made, then id."""
    return (attempt.submitted_at, attempt.id)


def solves(rules: Rules, view: View, attempt: Attempt) -> bool:
    """Whether ``attempt`` solves its problem if nothing before it in its cell did (accepted and visible)."""
    return attempt.verdict == ACCEPTED and not hides(rules, view, attempt)


def score_cell(rules: Rules, view: View, problem_id: str, attempts: list[Attempt]) -> Cell:
    """One row's standing on one problem from its attempts on it, in :func:`attempt_order`
    (``first_to_solve`` is for the caller to set: it depends on every row)."""
    cell = Cell(problem_id)
    for a in attempts:
        if a.verdict is None or hides(rules, view, a):
            cell.pending += 1
        elif a.verdict == ACCEPTED:
            cell.solved, cell.minute, cell.solved_by = True, a.minute, a.id
            break  # attempts after the solve do not count
        elif a.verdict not in FREE_VERDICTS:
            cell.rejected += 1
    return cell


def total(rules: Rules, row: Standing) -> None:
    """A row's score, solved count and penalty from its cells."""
    row.score = row.solved = row.penalty = 0
    for cell in row.cells.values():
        if cell.solved:
            assert cell.minute is not None
            row.solved += 1
            row.score += 1 if rules.scoring == "icpc" else rules.points.get(cell.problem_id, 0)
            row.penalty += cell.minute + rules.penalty_minutes * cell.rejected


def standings(
    rules: Rules,
    view: View,
    attempts: list[Attempt],
    names: dict[str, str],
) -> list[Standing]:
    """Standings from attempts (in any order), for ``view``: one row per (person, community) that has
    attempts, each scored from the attempts naming that community; ``names`` maps user id to name.
    This full recompute is the definition; :mod:`leaderboards.tally` keeps the same answer up to date."""
    cells: dict[tuple[str, str], dict[str, list[Attempt]]] = {}
    for a in sorted(attempts, key=attempt_order):
        cells.setdefault((a.user_id, a.community_id), {}).setdefault(a.problem_id, []).append(a)
    first: dict[str, str] = {}  # problem id -> the earliest solving attempt's id
    for a in sorted((a for a in attempts if solves(rules, view, a)), key=attempt_order, reverse=True):
        first[a.problem_id] = a.id
    rows = []
    for (user_id, community_id), by_problem in cells.items():
        row = Standing(user_id, names.get(user_id, ""), community_id=community_id)
        for problem_id, mine in by_problem.items():
            cell = row.cells[problem_id] = score_cell(rules, view, problem_id, mine)
            cell.first_to_solve = cell.solved and first.get(problem_id) == cell.solved_by
        total(rules, row)
        rows.append(row)
    return rank_rows(rows)


def community_standings(people: list[Standing], communities: dict[str, str]) -> list[Standing]:
    """Communities' standings: each one's rows summed (``communities`` maps id to name, all taking part)."""
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
