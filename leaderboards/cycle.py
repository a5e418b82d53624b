"""The weekly cycle: templates open the next war, ended wars are finalised, winners are paid in coins.

:meth:`Cycle.tick` does one pass and is idempotent, so every node may run it (the in-process scheduler,
:meth:`Cycle.run`, every ``STUDYHALL_CONTEST_CYCLE_S`` seconds) without doing anything twice:

- opening: for each active template, the war whose end is still ahead (this week's, or next week's once
  this week's has ended) is created unless it exists (one contest per template and start, a unique index);
- judging again what a stopped node left without a verdict for 5 minutes;
- freezing needs no step: the public board freezes at ``freeze_at`` by itself;
- finalising: every contest past its end with no submission waiting for the judge
  (:meth:`~leaderboards.service.Contests.finalise_contest`, itself once-only), which pays the prizes in
  its own transaction: each member who solved at least one problem for a community ranked ``r`` gets
  ``prizes[r - 1]`` coins (ties share the rank, so both are paid; a member who scored for two placed
  communities is paid for each), from the contest's prize budget; each payment has a unique ledger ref;
- paying again: a finalised contest whose payout was blocked (the budget could not cover it,
  :mod:`leaderboards.prizes`) is tried again on every pass until it is paid.

A template offering prizes opens no war until a platform admin approved them; its wars carry that
approval. Its communities take part in its wars once their admins accepted (:mod:`leaderboards.consent`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field, model_validator

from core_api.context import Core, audit, new_id
from core_api.db import Record
from core_api.errors import AppError
from core_api.executions import run_limits
from core_api.http import Api, Call, Input, Principal
from leaderboards import consent, prizes
from leaderboards.schemas import MAX_COMMUNITIES, MAX_PRIZE, MAX_PROBLEMS, ApprovalOut, CommunityRef, ProblemIn
from leaderboards.service import Clock, Contests, check_problem_limits, require_organizer

log = logging.getLogger(__name__)
STALE_JUDGING = timedelta(minutes=5)  # no verdict after this long: the node judging it is gone
api = Api()
TAG = "contests"


class TemplateIn(Input):
    title: str = Field(min_length=1, max_length=200)
    organizer_id: uuid.UUID | None = None
    communities: list[uuid.UUID] = Field(
        min_length=1,
        max_length=MAX_COMMUNITIES,
        description="Communities invited to its wars: one you administer takes part at once, any other once one "
        "of its admins accepts.",
    )
    problems: list[ProblemIn] = Field(min_length=1, max_length=MAX_PROBLEMS)
    scoring: Literal["icpc", "points"] = "icpc"
    penalty_minutes: int = Field(20, ge=0, le=1000)
    weekday: int = Field(5, ge=0, le=6, description="Day the war starts, 0 = Monday (UTC).")
    start_minute: int = Field(600, ge=0, le=1439, description="Minutes after midnight UTC.")
    duration_minutes: int = Field(120, ge=1, le=7 * 24 * 60 - 1)
    freeze_minutes: int = Field(30, ge=0, description="The board freezes this long before the end (0: never).")
    prizes: list[int] = Field(
        default_factory=list,
        max_length=10,
        description="Coins per member of the communities ranked 1, 2, ..., paid from a prize budget; prizes need "
        "a platform admin's approval before the template opens wars.",
    )

    @model_validator(mode="after")
    def _freeze(self) -> TemplateIn:
        if self.freeze_minutes >= self.duration_minutes:
            raise ValueError("freeze_minutes must be shorter than duration_minutes")
        if any(p < 0 or p > MAX_PRIZE for p in self.prizes):
            raise ValueError("prizes are between 0 and 1,000,000 coins")
        return self


class TemplateOut(BaseModel):
    id: uuid.UUID
    title: str
    organizer_id: uuid.UUID | None
    weekday: int
    start_minute: int
    duration_minutes: int
    freeze_minutes: int
    prizes: list[int]
    active: bool
    approval: ApprovalOut
    communities: list[CommunityRef] = Field(description="The communities taking part in its wars (they accepted).")


class TemplateList(BaseModel):
    items: list[TemplateOut]


def next_start(weekday: int, start_minute: int, duration_minutes: int, now: datetime) -> datetime:
    """The start of the first weekly occurrence that has not ended at ``now``."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight - timedelta(days=now.weekday() + 7 - weekday) + timedelta(minutes=start_minute)
    while start + timedelta(minutes=duration_minutes) <= now:
        start += timedelta(days=7)
    return start


class Cycle:
    def __init__(self, contests: Contests) -> None:
        self.contests = contests
        self.core: Core = contests.core

    async def create_template(self, user: Principal, body: TemplateIn) -> TemplateOut:
        check_problem_limits(body.problems, run_limits(self.core.settings))
        approval, approved_by = prizes.initial_approval(user, body.prizes)
        async with self.core.transaction() as tx:
            await require_organizer(tx.conn, user, body.organizer_id, "create a contest template")
            row = await tx.conn.fetchrow(
                "INSERT INTO contest_templates (id, title, organizer_id, created_by, problems, scoring,"
                " penalty_minutes, weekday, start_minute, duration_minutes, freeze_minutes, prizes, approval,"
                " approved_by, approval_decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
                " $14, CASE WHEN $14::uuid IS NULL THEN NULL ELSE now() END) RETURNING *",
                new_id(), body.title, body.organizer_id, user.id, [p.model_dump() for p in body.problems],
                body.scoring, body.penalty_minutes, body.weekday, body.start_minute, body.duration_minutes,
                body.freeze_minutes, body.prizes, approval, approved_by,
            )  # fmt: skip
            assert row is not None
            await consent.enlist(tx, user, consent.Target("template", row["id"], body.title), body.communities)
            await audit(tx, user.id, "contest_template.create", "contest_template", row["id"], prizes=body.prizes,
                        approval=approval)  # fmt: skip
        return await self._template_out(row)

    async def templates(self) -> TemplateList:
        rows = await self.core.pool.fetch("SELECT * FROM contest_templates ORDER BY created_at, id LIMIT 200")
        return TemplateList(items=[await self._template_out(r) for r in rows])

    async def _template_out(self, row: Record) -> TemplateOut:
        communities = await self.core.pool.fetch(
            "SELECT c.id, c.name FROM contest_template_communities x JOIN communities c ON c.id = x.community_id"
            " WHERE x.template_id = $1 AND x.state = 'accepted' ORDER BY c.name, c.id",
            row["id"],
        )
        return TemplateOut(
            id=row["id"], title=row["title"], organizer_id=row["organizer_id"], weekday=row["weekday"],
            start_minute=row["start_minute"], duration_minutes=row["duration_minutes"],
            freeze_minutes=row["freeze_minutes"], prizes=list(row["prizes"]), active=row["active"],
            approval=prizes.approval_out(row),
            communities=[CommunityRef(id=c["id"], name=c["name"]) for c in communities],
        )  # fmt: skip

    async def tick(self, now: datetime) -> dict[str, int]:
        """One pass of the cycle; returns how many wars it opened and finalised (paying their prizes), and how many
        blocked payouts it paid."""
        opened = finalised = paid = 0
        # Submissions whose node stopped while judging them would keep their contest from finalising.
        await self.contests.judge_stale(now - STALE_JUDGING, STALE_JUDGING.total_seconds())
        # A template whose prizes wait for an admin (or were rejected) opens no war.
        for template in await self.core.pool.fetch(
            "SELECT * FROM contest_templates WHERE active AND approval IN ('not_needed', 'approved')"
        ):
            start = next_start(template["weekday"], template["start_minute"], template["duration_minutes"], now)
            opened += await self._open(template, start)
        due = await self.core.pool.fetch(
            "SELECT id FROM contests WHERE finalised_at IS NULL AND ends_at <= $1 ORDER BY ends_at", now
        )
        for row in due:
            try:
                finalised += await self.contests.finalise_contest(row["id"], None)
            except AppError as exc:  # submissions still waiting for the judge: next time
                log.info("contest %s not finalised yet: %s", row["id"], exc.message)
        unpaid = await self.core.pool.fetch(
            "SELECT id FROM contests WHERE finalised_at IS NOT NULL AND awarded_at IS NULL ORDER BY finalised_at"
        )
        for row in unpaid:
            paid += await self.award(row["id"])
        return {"opened": opened, "finalised": finalised, "paid": paid}

    async def _open(self, template: Record, start: datetime) -> int:
        ends = start + timedelta(minutes=template["duration_minutes"])
        freeze = ends - timedelta(minutes=template["freeze_minutes"]) if template["freeze_minutes"] else None
        async with self.core.transaction() as tx:
            contest_id = await tx.conn.fetchval(
                "INSERT INTO contests (id, title, organizer_id, created_by, starts_at, ends_at, freeze_at, scoring,"
                " penalty_minutes, template_id, prizes, approval, approval_note, approved_by, approval_decided_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                " ON CONFLICT (template_id, starts_at) WHERE template_id IS NOT NULL DO NOTHING RETURNING id",
                new_id(), f"{template['title']} ({start:%Y-%m-%d})", template["organizer_id"],
                template["created_by"], start, ends, freeze, template["scoring"], template["penalty_minutes"],
                template["id"], template["prizes"], template["approval"], template["approval_note"],
                template["approved_by"], template["approval_decided_at"],
            )  # fmt: skip
            if contest_id is None:
                return 0
            # The communities that accepted the template's invitation take part; their consent carries over.
            await tx.conn.execute(
                "INSERT INTO contest_communities (contest_id, community_id, state, invited_by, answered_by,"
                " answered_at, invited_at) SELECT $1, community_id, 'accepted', invited_by, answered_by, answered_at,"
                " invited_at FROM contest_template_communities WHERE template_id = $2 AND state = 'accepted'",
                contest_id,
                template["id"],
            )
            await tx.conn.executemany(
                "INSERT INTO contest_problems (id, contest_id, ordinal, label, title, statement, samples, tests,"
                " cpu_ms, memory_kb, points) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                [
                    (new_id(), contest_id, i, chr(ord("A") + i), p["title"], p.get("statement", ""),
                     p.get("samples", []), p["tests"], p["cpu_ms"], p["memory_kb"], p["points"])
                    for i, p in enumerate(template["problems"])
                ],
            )  # fmt: skip
            await audit(tx, None, "contest.open", "contest", contest_id, template_id=str(template["id"]))
        return 1

    async def award(self, contest_id: uuid.UUID) -> int:
        """Pay the contest's prizes once, from its prize budget; returns 1 if this call settled them."""
        return await prizes.award(self.core, contest_id)

    async def run(self, interval_s: float, clock: Clock) -> None:
        """The in-process scheduler: a tick every ``interval_s`` seconds until cancelled."""
        while True:
            try:
                await self.tick(clock())
            except Exception:
                log.exception("the contest cycle failed; trying again in %.0f s", interval_s)
            await asyncio.sleep(interval_s)


CYCLE = web.AppKey("cycle", Cycle)


@api.route("POST", "/contest-templates", summary="A weekly war template (admins, or the organizer's admins)",
           tag=TAG, body=TemplateIn, response=TemplateOut, status=201, errors=[403, 404])  # fmt: skip
async def post_contest_template(call: Call) -> TemplateOut:
    cycle: Cycle = call.request.app[CYCLE]
    return await cycle.create_template(call.me, call.body)


@api.route("GET", "/contest-templates", summary="The weekly war templates", tag=TAG, response=TemplateList)
async def get_contest_templates(call: Call) -> TemplateList:
    cycle: Cycle = call.request.app[CYCLE]
    return await cycle.templates()
