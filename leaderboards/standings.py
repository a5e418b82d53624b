"""Standings on this node: kept in memory per contest and brought up to date from Postgres
(:class:`LiveStandings`), turned into the API's models (:class:`Computed`) and written to the boards.

A person has one row per community they submitted for, so on the boards of people a member is
``<user id>:<community id>`` (:func:`person_member`); boards of communities hold community ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core_api.db import Pool
from core_api.errors import not_found
from core_api.heap import request_settle
from leaderboards import core as scoring
from leaderboards import store
from leaderboards.board import Board, Entry
from leaderboards.schemas import BoardEntry, CellOut, CommunityRow, PersonRow, StandingsOut
from leaderboards.tally import Tally

log = logging.getLogger(__name__)

PUSH_PEOPLE = 100  # rows of each list in a live push (the full standings are at GET .../standings)
PUSH_COMMUNITIES = 100
BUILD_CHUNK = 2000  # attempts applied between two yields to the event loop while building


def person_member(row: scoring.Standing) -> str:
    """A person's row on a board: the person and the community it scores for."""
    return f"{row.id}:{row.community_id}"


def board_entry(e: Entry, names: dict[str, str]) -> BoardEntry:
    """A board's entry for the API; ``names`` by user or community id."""
    score, penalty = scoring.split_board_score(e.value)
    who, _, community = e.member.partition(":")
    return BoardEntry(
        rank=e.rank, id=uuid.UUID(who), name=names.get(who), community_id=uuid.UUID(community) if community else None,
        score=score, penalty=penalty,
    )  # fmt: skip


@dataclass
class Computed:
    """One view's standings as scoring left them, ranked; :meth:`out` makes the API's model of (the first rows
    of) them. ``people`` and ``groups`` may be only the first rows; the totals count every row."""

    contest_id: uuid.UUID
    view: scoring.View
    rules: scoring.Rules
    order: list[str]
    people: list[scoring.Standing]
    groups: list[scoring.Standing]
    frozen: bool
    people_total: int | None = None
    groups_total: int | None = None

    def out(self, people: int | None = None, communities: int | None = None) -> StandingsOut:
        return StandingsOut(
            contest_id=self.contest_id,
            view=self.view,
            frozen=self.frozen,
            scoring=self.rules.scoring,
            people=[
                PersonRow(
                    rank=p.rank, user_id=uuid.UUID(p.id), display_name=p.name,
                    community_id=uuid.UUID(p.community_id) if p.community_id else None,
                    score=p.score, solved=p.solved, penalty=p.penalty,
                    problems=[
                        CellOut(problem_id=uuid.UUID(c.problem_id), solved=c.solved, minute=c.minute,
                                rejected=c.rejected, pending=c.pending, first_to_solve=c.first_to_solve)
                        for pid in self.order if (c := p.cells.get(pid)) is not None
                    ],
                )
                for p in self.people[:people]
            ],
            communities=[
                CommunityRow(rank=g.rank, community_id=uuid.UUID(g.id), name=g.name, score=g.score, solved=g.solved,
                             penalty=g.penalty)
                for g in self.groups[:communities]
            ],
        )  # fmt: skip


def push_payload(computed: Computed) -> dict[str, Any]:
    """A live push: the first rows of each list (only those become models; the boards hold everyone)."""
    data = computed.out(PUSH_PEOPLE, PUSH_COMMUNITIES).model_dump(mode="json")
    data["people_total"] = len(computed.people) if computed.people_total is None else computed.people_total
    data["communities_total"] = len(computed.groups) if computed.groups_total is None else computed.groups_total
    return data


def board_key(contest_id: uuid.UUID, kind: str, view: str) -> str:
    return f"contest:{contest_id}:{kind}:{view}"


@dataclass
class ContestStandings:
    """One contest's standings on this node: a :class:`~leaderboards.tally.Tally` per view, and what they were
    built from. ``watermark`` is where the next read of changed submissions starts."""

    contest_id: uuid.UUID
    rules: scoring.Rules
    order: list[str]
    communities: dict[str, str]
    frozen: bool  # the freeze had started at the last read
    watermark: int
    tallies: dict[scoring.View, Tally]
    built_at: float
    whole_boards: bool = True  # the next board write replaces the boards (after a build)

    def computed(self, view: scoring.View, people: int | None = PUSH_PEOPLE) -> Computed:
        """The first ``people`` rows of ``view`` (and as many communities), ranked, with the totals."""
        tally = self.tallies[view]
        return Computed(
            contest_id=self.contest_id, view=view, rules=self.rules, order=self.order,
            people=tally.ranked(people), groups=tally.ranked_groups(PUSH_COMMUNITIES if people else None),
            frozen=view == "public" and self.frozen, people_total=tally.people_total,
            groups_total=tally.groups_total,
        )  # fmt: skip


class LiveStandings:
    """Contests' standings kept in memory on this node, brought up to date from Postgres on each use.

    A use reads, in one snapshot, the contest, its problems and communities, and the submissions written
    since the last read (``changed_xid``, migration 0018), and applies those to the tallies. It builds
    them from every submission instead (the full recompute of :func:`leaderboards.core.standings`) on
    first use, when the rules, problems or communities changed, when the freeze started, and every
    ``recheck_s`` (then a difference from the incremental standings is logged: it would be a bug).

    Args:
        pool: Postgres.
        board: where :meth:`write_boards` writes.
        recheck_s: seconds between two full rebuilds of a contest in use (300).
        keep: contests kept; the least recently used beyond are dropped (64).
        monotonic: the clock ``recheck_s`` is measured on.
    """

    def __init__(
        self,
        pool: Pool,
        board: Board,
        *,
        recheck_s: float = 300.0,
        keep: int = 64,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.board = board
        self.recheck_s = recheck_s
        self.keep = keep
        self.monotonic = monotonic
        self._states: OrderedDict[uuid.UUID, ContestStandings] = OrderedDict()
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self.builds = 0  # full recomputes
        self.mismatches = 0  # rechecks that found the incremental standings wrong

    async def current(self, contest_id: uuid.UUID, now: datetime) -> ContestStandings:
        """The contest's standings as Postgres has them now (not_found for a contest that does not exist)."""
        lock = self._locks.setdefault(contest_id, asyncio.Lock())
        async with lock:
            state = await self._sync(contest_id, now)
        self._states.move_to_end(contest_id)
        while len(self._states) > self.keep:
            gone, _ = self._states.popitem(last=False)
            if not self._locks[gone].locked():
                del self._locks[gone]
        return state

    async def _sync(self, contest_id: uuid.UUID, now: datetime) -> ContestStandings:
        # Two statements, two snapshots: the changes are read after the horizon was taken, so the next read
        # (from that horizon) sees whatever this one could not; changes read twice are applied twice, alike.
        async with self.pool.acquire() as conn:
            found = await store.contest_state(conn, contest_id)
            if found is None:
                self._states.pop(contest_id, None)
                raise not_found("contest")
            horizon, contest, rules, communities = found
            order = list(rules.points)
            frozen = rules.freeze_at is not None and not rules.finalised and now >= rules.freeze_at
            state = self._states.get(contest_id)
            same = state is not None and (state.rules, state.order, state.communities, state.frozen) == (
                rules, order, communities, frozen,
            )  # fmt: skip
            if state is not None and same and self.monotonic() - state.built_at < self.recheck_s:
                changed, removed, names = await store.attempts_changed(conn, contest, state.watermark)
                for tally in state.tallies.values():
                    tally.apply(changed, removed, names)
                state.watermark = horizon
                return state
            attempts, names = await store.attempts_of(conn, contest)
        tallies: dict[scoring.View, Tally] = {view: Tally(rules, view, communities) for view in ("public", "jury")}
        for i in range(0, max(1, len(attempts)), BUILD_CHUNK):  # a big contest takes seconds: let the node breathe
            for tally in tallies.values():
                tally.apply(attempts[i : i + BUILD_CHUNK], (), names if i == 0 else {})
            await asyncio.sleep(0)
        fresh = ContestStandings(contest_id, rules, order, communities, frozen, horizon, tallies, self.monotonic())
        self.builds += 1
        request_settle()  # the standings live on: keep them out of full collections (core_api/heap.py)
        if state is not None and same:  # a recheck: the incremental standings should have been the same
            for view, tally in state.tallies.items():
                if _scores(tally) != _scores(tallies[view]):
                    self.mismatches += 1
                    log.warning("contest %s: the incremental %s standings differed from a full recompute", contest_id,
                                view)  # fmt: skip
        self._states[contest_id] = fresh
        return fresh

    async def write_boards(self, contest_id: uuid.UUID, whole: bool = False) -> None:
        """Write to the boards what changed since the last write (or everything, after a build or if asked)."""
        state = self._states.get(contest_id)
        if state is None:
            return
        whole, state.whole_boards = whole or state.whole_boards, False
        try:
            for view, tally in state.tallies.items():
                users, groups = board_key(contest_id, "users", view), board_key(contest_id, "communities", view)
                rows, tally.changed_rows = tally.changed_rows, set()
                changed_groups, tally.changed_groups = tally.changed_groups, set()
                values = {f"{u}:{c}": tally.row_value((u, c)) for u, c in rows}
                if whole or not await self.board.update(
                    users,
                    {m: v for m, v in values.items() if v is not None},
                    [m for m, v in values.items() if v is None],
                ):
                    await self.board.replace(users, {person_member(r): _value(r) for r in tally.rows()})
                if whole or not await self.board.update(groups, {g: tally.group_value(g) for g in changed_groups}, []):
                    await self.board.replace(groups, {g.id: _value(g) for g in tally.groups()})
        except BaseException:
            state.whole_boards = True  # what changed is no longer listed: write everything next time
            raise

    def forget(self, contest_id: uuid.UUID) -> None:
        self._states.pop(contest_id, None)


def _value(row: scoring.Standing) -> float:
    return scoring.board_score(row.score, row.penalty)


def _scores(tally: Tally) -> list[tuple[str, str | None, int, int, int, int]]:
    return sorted((r.id, r.community_id, r.rank, r.score, r.penalty, r.solved) for r in tally.ranked())
