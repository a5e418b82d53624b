"""Standings kept up to date attempt by attempt, pure (no I/O, no clock).

A :class:`Tally` holds one view of one contest: every counted attempt, and the rows, cells and community
sums :func:`leaderboards.core.standings` would make of them. When attempts arrive, change (a verdict, a
rejudge) or go (disqualified, deleted), only the cells they are in are scored again, with
:func:`leaderboards.core.score_cell`, and only the rows of those cells are totalled again and moved in
the ranking (a sorted list); a community's sums change by its changed rows' differences. The scoring
rules live in :mod:`leaderboards.core` alone: after any sequence of changes, :meth:`Tally.ranked` equals
``core.standings`` of the same attempts, and :meth:`Tally.ranked_groups` ``core.community_standings``
(tests/test_contest_tally.py checks it on random attempts).

The rules, the view and the communities taking part are fixed for a tally: when one of them changes,
build a new one (:meth:`Tally.build`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from datetime import datetime

from sortedcontainers import SortedList

from leaderboards.core import (
    Attempt,
    Rules,
    Standing,
    View,
    attempt_order,
    board_score,
    row_order,
    score_cell,
    solves,
    total,
)

RowKey = tuple[str, str]  # (user id, community id)
CellKey = tuple[str, str, str]  # (user id, community id, problem id)
OrderKey = tuple[int, int, str, str, str]  # core.row_order


class Tally:
    """One view's standings, changed attempt by attempt.

    Args:
        rules: the contest's scoring rules.
        view: ``public`` (the freeze hides) or ``jury``.
        communities: the communities taking part, id to name (they get rows even at zero).
    """

    def __init__(self, rules: Rules, view: View, communities: dict[str, str]) -> None:
        self.rules = rules
        self.view: View = view
        self.communities = dict(communities)
        self._attempts: dict[str, Attempt] = {}
        self._cells: dict[CellKey, list[Attempt]] = {}  # in attempt_order
        self._firsts: dict[str, SortedList[tuple[datetime, str]]] = {}  # problem -> its solving attempts
        self._names: dict[str, str] = {}
        self._rows: dict[RowKey, Standing] = {}
        self._of_user: dict[str, set[RowKey]] = {}
        self._order: SortedList[OrderKey] = SortedList()
        self._filed: dict[RowKey, OrderKey] = {}
        self._groups = {cid: Standing(cid, name) for cid, name in communities.items()}
        self._group_order: SortedList[OrderKey] = SortedList(row_order(g) for g in self._groups.values())
        self.changed_rows: set[RowKey] = set()  # since the boards were last written (drained by the caller)
        self.changed_groups: set[str] = set()

    @classmethod
    def build(
        cls, rules: Rules, view: View, communities: dict[str, str], attempts: list[Attempt], names: dict[str, str]
    ) -> Tally:
        tally = cls(rules, view, communities)
        tally.apply(attempts, (), names)
        return tally

    # --- changes ---------------------------------------------------------------------------------------

    def apply(self, changed: Iterable[Attempt], removed: Iterable[str], names: dict[str, str]) -> None:
        """Take in attempts that are new or changed (their current state), drop attempts by id (those
        disqualified or deleted; unknown ids are ignored), and learn display names (user id to name)."""
        dirty: set[CellKey] = set()
        firsts_before: dict[str, str | None] = {}
        for attempt_id in removed:
            self._drop(attempt_id, dirty, firsts_before)
        for attempt in changed:
            old = self._attempts.get(attempt.id)
            if old == attempt:
                continue
            if old is not None:
                self._drop(attempt.id, dirty, firsts_before)
            self._add(attempt, dirty, firsts_before)
        rows: set[RowKey] = {(u, c) for u, c, _ in dirty}
        for user_id, name in names.items():
            if self._names.get(user_id, name) != name:  # renamed: re-file their rows
                rows |= self._of_user.get(user_id, set())
            self._names[user_id] = name
        for key in dirty:
            self._score(key)
        for problem_id, before in firsts_before.items():
            now = self._first(problem_id)
            if now != before:
                for holder in (before, now):
                    self._mark_first(holder, problem_id, now)
        for row_key in rows:
            self._total(row_key)

    def _add(self, a: Attempt, dirty: set[CellKey], firsts_before: dict[str, str | None]) -> None:
        self._attempts[a.id] = a
        key = (a.user_id, a.community_id, a.problem_id)
        bisect.insort(self._cells.setdefault(key, []), a, key=attempt_order)
        dirty.add(key)
        if solves(self.rules, self.view, a):
            firsts_before.setdefault(a.problem_id, self._first(a.problem_id))
            self._firsts.setdefault(a.problem_id, SortedList()).add(attempt_order(a))

    def _drop(self, attempt_id: str, dirty: set[CellKey], firsts_before: dict[str, str | None]) -> None:
        a = self._attempts.pop(attempt_id, None)
        if a is None:
            return
        key = (a.user_id, a.community_id, a.problem_id)
        cell = self._cells[key]
        del cell[bisect.bisect_left(cell, attempt_order(a), key=attempt_order)]
        if not cell:
            del self._cells[key]
        dirty.add(key)
        if solves(self.rules, self.view, a):
            firsts_before.setdefault(a.problem_id, self._first(a.problem_id))
            self._firsts[a.problem_id].remove(attempt_order(a))

    def _first(self, problem_id: str) -> str | None:
        solving = self._firsts.get(problem_id)
        return solving[0][1] if solving else None

    def _score(self, key: CellKey) -> None:
        user_id, community_id, problem_id = key
        attempts = self._cells.get(key)
        row = self._rows.get((user_id, community_id))
        if not attempts:
            if row is not None:
                row.cells.pop(problem_id, None)
            return
        if row is None:
            row = self._rows[(user_id, community_id)] = Standing(
                user_id, self._names.get(user_id, ""), community_id=community_id
            )
            self._of_user.setdefault(user_id, set()).add((user_id, community_id))
        cell = row.cells[problem_id] = score_cell(self.rules, self.view, problem_id, attempts)
        cell.first_to_solve = cell.solved and cell.solved_by == self._first(problem_id)

    def _mark_first(self, attempt_id: str | None, problem_id: str, first: str | None) -> None:
        a = self._attempts.get(attempt_id or "")
        row = self._rows.get((a.user_id, a.community_id)) if a is not None else None
        cell = row.cells.get(problem_id) if row is not None else None
        if cell is not None:
            cell.first_to_solve = cell.solved and cell.solved_by == first

    def _total(self, key: RowKey) -> None:
        row = self._rows.get(key)
        if row is None:
            return
        before = (row.score, row.penalty, row.solved)
        filed = self._filed.pop(key, None)
        if filed is not None:
            self._order.remove(filed)
        if row.cells:
            row.name = self._names.get(row.id, "")
            total(self.rules, row)
            self._filed[key] = row_order(row)
            self._order.add(self._filed[key])
        else:  # its last attempt went
            del self._rows[key]
            self._of_user[row.id].discard(key)
            row.score = row.penalty = row.solved = 0
        self.changed_rows.add(key)
        group = self._groups.get(key[1])
        if group is not None and before != (row.score, row.penalty, row.solved):
            self._group_order.remove(row_order(group))
            group.score += row.score - before[0]
            group.penalty += row.penalty - before[1]
            group.solved += row.solved - before[2]
            self._group_order.add(row_order(group))
            self.changed_groups.add(group.id)

    # --- reading ---------------------------------------------------------------------------------------

    @property
    def people_total(self) -> int:
        return len(self._rows)

    @property
    def groups_total(self) -> int:
        return len(self._groups)

    def ranked(self, limit: int | None = None) -> list[Standing]:
        """The first ``limit`` rows (all by default), ranked as :func:`leaderboards.core.rank_rows` ranks them.
        The rows are the tally's own: read them before the next change."""
        return _ranked(self._rows[(k[3], k[4])] for k in self._order.islice(0, limit))

    def ranked_groups(self, limit: int | None = None) -> list[Standing]:
        return _ranked(self._groups[k[3]] for k in self._group_order.islice(0, limit))

    def row_value(self, key: RowKey) -> float | None:
        """A row's board value (``None`` once the row is gone)."""
        row = self._rows.get(key)
        return None if row is None else board_score(row.score, row.penalty)

    def group_value(self, community_id: str) -> float:
        group = self._groups[community_id]
        return board_score(group.score, group.penalty)

    def rows(self) -> Iterator[Standing]:
        return iter(self._rows.values())

    def groups(self) -> Iterator[Standing]:
        return iter(self._groups.values())


def _ranked(rows: Iterable[Standing]) -> list[Standing]:
    out: list[Standing] = []
    for i, row in enumerate(rows):
        same = i > 0 and (out[-1].score, out[-1].penalty) == (row.score, row.penalty)
        row.rank = out[-1].rank if same else i + 1
        out.append(row)
    return out
