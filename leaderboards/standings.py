"""Standings as the API shows them: the models made from scoring's rows, and board members.

A person has one row per community they submitted for, so on the boards of people a member is
``<user id>:<community id>`` (:func:`person_member`); boards of communities hold community ids.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from leaderboards import core as scoring
from leaderboards.board import Entry
from leaderboards.schemas import BoardEntry, CellOut, CommunityRow, PersonRow, StandingsOut

PUSH_PEOPLE = 100  # rows of each list in a live push (the full standings are at GET .../standings)
PUSH_COMMUNITIES = 100


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
