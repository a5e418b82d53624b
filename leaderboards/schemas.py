"""Typed bodies and answers of contests, validated at the edge with limits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from core_api.http import Input, Query
from core_api.timestamps import Timestamp
from sandbox.models import MAX_SOURCE_CHARS, MAX_STDIN_CHARS

MAX_PROBLEMS = 26
MAX_CASES = 50
MAX_COMMUNITIES = 64
MAX_PRIZE = 1_000_000
Approval = Literal["not_needed", "pending", "approved", "rejected"]
Participation = Literal["invited", "accepted", "declined"]


class Sample(Input):
    stdin: str = Field("", max_length=MAX_STDIN_CHARS)
    expected_output: str = Field(max_length=MAX_STDIN_CHARS)


class ProblemIn(Input):
    title: str = Field(min_length=1, max_length=200)
    statement: str = Field("", max_length=20_000)
    samples: list[Sample] = Field(default_factory=list, max_length=10, description="Shown to contestants.")
    tests: list[Sample] = Field(
        min_length=1, max_length=MAX_CASES, description="Hidden test cases; never shown to contestants."
    )
    cpu_ms: int = Field(1000, ge=10, le=10_000, description="CPU time limit per test case.")
    memory_kb: int = Field(256 * 1024, ge=8 * 1024, le=1024 * 1024, description="Memory limit per test case.")
    points: int = Field(1, ge=0, le=10_000, description="What solving it scores under `points` scoring.")


class ContestIn(Input):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=20_000)
    organizer_id: uuid.UUID | None = Field(
        None, description="The community running it; its admins manage it. Required unless you are a platform admin."
    )
    starts_at: Timestamp
    ends_at: Timestamp
    freeze_at: Timestamp | None = Field(None, description="From then until finalised the public board is frozen.")
    scoring: Literal["icpc", "points"] = "icpc"
    penalty_minutes: int = Field(20, ge=0, le=1000, description="Added per rejected attempt before an accept.")
    communities: list[uuid.UUID] = Field(
        min_length=1,
        max_length=MAX_COMMUNITIES,
        description="Communities invited to take part. One you administer takes part at once; any other is "
        "invited, and takes part once one of its admins accepts.",
    )
    problems: list[ProblemIn] = Field(min_length=1, max_length=MAX_PROBLEMS)
    prizes: list[Annotated[int, Field(ge=0, le=MAX_PRIZE)]] = Field(
        default_factory=list,
        max_length=10,
        description="Coins for each member who solved a problem for the communities ranked 1, 2, ... (paid once "
        "per placement, when finalised, from a prize budget a platform admin set: a member who solved for two "
        "placed communities gets both prizes). Prizes need a platform admin's approval before the contest may "
        "start.",
    )

    @model_validator(mode="after")
    def _window(self) -> ContestIn:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.freeze_at is not None and not (self.starts_at <= self.freeze_at <= self.ends_at):
            raise ValueError("freeze_at must lie between starts_at and ends_at")
        return self


class ProblemOut(BaseModel):
    id: uuid.UUID
    label: str = Field(description="`A`, `B`, ... in contest order.")
    title: str
    statement: str
    samples: list[Sample]
    cpu_ms: int
    memory_kb: int
    points: int
    test_count: int


class CommunityRef(BaseModel):
    id: uuid.UUID
    name: str


class ApprovalOut(BaseModel):
    state: Approval = Field(
        description="`not_needed` (no prizes), `pending` (waits for a platform admin; submissions are refused "
        "meanwhile), `approved` or `rejected` (it does not run)."
    )
    message: str | None = Field(description="Why it waits or what was decided, in words.")
    note: str | None = Field(description="The deciding admin's note.")
    decided_by: uuid.UUID | None
    decided_at: datetime | None


class PayoutOut(BaseModel):
    state: Literal["none", "due", "paid", "blocked"] = Field(
        description="`none` (no prizes to pay), `due` (paid once finalised), `paid`, or `blocked` (the prize "
        "budget cannot pay yet: `message` says why; paid as soon as it can)."
    )
    message: str | None
    paid_at: datetime | None


class InvitationOut(BaseModel):
    community_id: uuid.UUID
    name: str | None = Field(description="Null for a community you cannot see.")
    state: Participation
    answered_at: datetime | None


class ContestOut(BaseModel):
    id: uuid.UUID
    title: str
    description: str
    organizer_id: uuid.UUID | None
    starts_at: datetime
    ends_at: datetime
    freeze_at: datetime | None
    scoring: Literal["icpc", "points"]
    penalty_minutes: int
    finalised_at: datetime | None
    state: Literal["scheduled", "running", "frozen", "ended", "finalised"]
    communities: list[CommunityRef] = Field(description="The communities taking part (their admins accepted).")
    problems: list[ProblemOut] = Field(description="Empty before the start, unless you manage the contest.")
    can_manage: bool
    prizes: list[int] = Field(description="Coins per member who solved a problem, for the communities ranked 1, 2, ...")
    approval: ApprovalOut
    payout: PayoutOut
    invitations: list[InvitationOut] = Field(
        description="Managers: every community invited and its answer (only the ones you can see); others: empty."
    )


class SubmissionIn(Input):
    language: str = Field(min_length=1, max_length=32, description="A language id from `GET /languages`.")
    source: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS)
    community_id: uuid.UUID | None = Field(
        None, description="Which of your communities this scores for, if you are in several taking part."
    )


class WaitQuery(Query):
    wait: bool = Field(False, description="Answer once judged (200), or after a timeout (202).")


class SubmissionOut(BaseModel):
    id: uuid.UUID
    contest_id: uuid.UUID
    problem_id: uuid.UUID
    user_id: uuid.UUID
    community_id: uuid.UUID
    language: str
    submitted_at: datetime
    minute: int = Field(description="Whole minutes from the contest's start.")
    verdict: str | None = Field(description="Null while waiting for the judge.")
    passed: int | None
    total: int | None
    judged_at: datetime | None
    disqualified: bool


class DisqualifyIn(Input):
    reason: str = Field(min_length=1, max_length=500)


class RejudgeOut(BaseModel):
    submissions: int = Field(description="How many submissions went back to the judge.")


class SubmissionList(BaseModel):
    items: list[SubmissionOut]


class CellOut(BaseModel):
    problem_id: uuid.UUID
    solved: bool
    minute: int | None
    rejected: int
    pending: int
    first_to_solve: bool


class PersonRow(BaseModel):
    rank: int
    user_id: uuid.UUID
    display_name: str
    community_id: uuid.UUID | None = Field(
        description="The community this row scores for: a person has one row per community they submitted for."
    )
    community_name: str | None = Field(
        None, description="The name of the community this row scores for (those taking part accepted to be named)."
    )
    score: int
    solved: int
    penalty: int
    problems: list[CellOut]


class CommunityRow(BaseModel):
    rank: int
    community_id: uuid.UUID
    name: str
    score: int
    solved: int
    penalty: int


class StandingsOut(BaseModel):
    contest_id: uuid.UUID
    view: Literal["public", "jury"]
    frozen: bool = Field(description="Results after the freeze are hidden in this view.")
    scoring: Literal["icpc", "points"]
    people: list[PersonRow]
    communities: list[CommunityRow]

    @model_validator(mode="after")
    def _name_people_rows(self) -> StandingsOut:
        """Each person row names its community from the community rows: the communities taking part, which
        accepted to be named (all of them: a contest has at most MAX_COMMUNITIES, fewer than a push lists)."""
        named = {c.community_id: c.name for c in self.communities}
        for person in self.people:
            if person.community_name is None and person.community_id is not None:
                person.community_name = named.get(person.community_id)
        return self


class StandingsQuery(Query):
    view: Literal["public", "jury"] = Field("public", description="`jury` (managers only) shows everything.")


class BoardQuery(Query):
    kind: Literal["users", "communities"] = "users"
    limit: int = Field(100, ge=1, le=1000)


class BoardEntry(BaseModel):
    rank: int
    id: uuid.UUID
    name: str | None = Field(
        description="The person's display name, or the community's name (null for a private community you "
        "cannot see that never accepted to take part in a contest)."
    )
    community_id: uuid.UUID | None = Field(
        None,
        description="On a board of people: the community this row scores for (a person has one row per "
        "community they submitted for). Null on boards of communities.",
    )
    score: int
    penalty: int


class BoardOut(BaseModel):
    items: list[BoardEntry]


class MyRankOut(BaseModel):
    me: BoardEntry | None = Field(description="Your best row (its `community_id` says which community it is for).")
    community: BoardEntry | None = Field(description="The community of your best row.")
    rows: list[BoardEntry] = Field(
        default_factory=list, description="Each of your rows, one per community you submitted for, best first."
    )
