"""Group wars over REST and Socket.IO: thin handlers (parse, authorize in the service, answer).

Socket.IO (c→s, with acks): ``contest:subscribe {contest_id, view?}`` → ``{ok, standings}`` (as pushed) and from then
on ``leaderboard:update`` (the standings) in room ``contest:<id>`` (``view: "jury"``, managers only:
``contest:<id>:jury``); ``contest:unsubscribe {contest_id}`` → ``{ok}``.

A jury subscriber who stops being a manager (platform role or organizing community role lost, removed
from that community) is moved to the public board at once: s→c ``contest:downgraded {contest_id, view:
"public", standings}``, then public ``leaderboard:update`` pushes only.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from core_api.context import CORE
from core_api.errors import AppError, forbidden
from core_api.events import Connection, EventCall, Events
from core_api.http import Api, Call, Input, Query, Reply
from leaderboards import consent
from leaderboards.schemas import (
    Approval,
    BoardOut,
    BoardQuery,
    ContestIn,
    ContestOut,
    DisqualifyIn,
    InvitationOut,
    MyRankOut,
    StandingsOut,
    StandingsQuery,
    SubmissionIn,
    SubmissionList,
    SubmissionOut,
    WaitQuery,
)
from leaderboards.service import Contests, contest_room

CONTESTS = web.AppKey("contests", Contests)
SESSION_KEY = "leaderboards.contests"
DOWNGRADED_EVENT = "contest:downgraded"
TAG = "contests"
api = Api()
events = Events()


class ContestList(BaseModel):
    items: list[ContestOut]


class ListQuery(Query):
    limit: int = Field(50, ge=1, le=200)


class ContestListQuery(ListQuery):
    approval: Approval | None = Field(None, description="Only contests whose prizes are in this state of approval.")
    mine: bool = Field(False, description="Only contests one of the caller's communities takes part in (accepted).")


class SubmissionsQuery(Query):
    everyone: bool = Field(False, description="Managers: every contestant's submissions.")


def contests_of(call: Call) -> Contests:
    return call.request.app[CONTESTS]


@api.route("POST", "/contests", summary="Create a contest (admins, or the organizing community's admins)", tag=TAG,
           body=ContestIn, response=ContestOut, status=201, errors=[403, 404])  # fmt: skip
async def post_contest(call: Call) -> ContestOut:
    return await contests_of(call).create(call.me, call.body)


@api.route("GET", "/contests", summary="Contests, the running ones first", tag=TAG, query=ContestListQuery,
           response=ContestList)  # fmt: skip
async def get_contests(call: Call) -> ContestList:
    query = call.query
    return ContestList(items=await contests_of(call).recent(call.me, query.limit, query.approval, mine=query.mine))


@api.route("GET", "/contests/{contest_id}", summary="One contest and its problems", tag=TAG, response=ContestOut)
async def get_contest(call: Call) -> ContestOut:
    return await contests_of(call).get(call.me, call.params["contest_id"])


@api.route("POST", "/contests/{contest_id}/problems/{problem_id}/submissions",
           summary="Submit a solution; judged by the sandbox", tag=TAG, body=SubmissionIn, query=WaitQuery,
           response=SubmissionOut, status=202, errors=[403, 409, 503],
           extra_statuses={200: "Judged (with `?wait=true`)"})  # fmt: skip
async def post_contest_submission(call: Call) -> Reply:
    out = await contests_of(call).submit(
        call.me, call.params["contest_id"], call.params["problem_id"], call.body, call.query.wait
    )
    return Reply(out, 200 if out.verdict is not None else 202)


@api.route("GET", "/contests/{contest_id}/submissions", summary="Your submissions (managers: everyone's)",
           tag=TAG, query=SubmissionsQuery, response=SubmissionList, errors=[403])  # fmt: skip
async def get_contest_submissions(call: Call) -> SubmissionList:
    items = await contests_of(call).submissions(call.me, call.params["contest_id"], call.query.everyone)
    return SubmissionList(items=items)


@api.route("GET", "/contests/{contest_id}/standings", summary="Individual and community standings", tag=TAG,
           query=StandingsQuery, response=StandingsOut, errors=[403])  # fmt: skip
async def get_contest_standings(call: Call) -> StandingsOut:
    return await contests_of(call).standings(call.me, call.params["contest_id"], call.query.view)


@api.route("GET", "/contests/{contest_id}/board", summary="Top of the public board (people or communities)",
           tag=TAG, query=BoardQuery, response=BoardOut)  # fmt: skip
async def get_contest_board(call: Call) -> BoardOut:
    return await contests_of(call).top(call.me, call.params["contest_id"], call.query.kind, call.query.limit)


@api.route("GET", "/contests/{contest_id}/board/me", summary="Your rank and your community's", tag=TAG,
           response=MyRankOut)  # fmt: skip
async def get_my_contest_rank(call: Call) -> MyRankOut:
    return await contests_of(call).my_rank(call.me, call.params["contest_id"])


@api.route("POST", "/contests/{contest_id}/finalise", summary="Finalise: unfreeze and record the results",
           tag=TAG, response=ContestOut, errors=[403, 409])  # fmt: skip
async def post_contest_finalise(call: Call) -> ContestOut:
    return await contests_of(call).finalise(call.me, call.params["contest_id"])


@api.route("POST", "/contests/{contest_id}/submissions/{submission_id}/disqualify",
           summary="Disqualify a submission (managers)", tag=TAG, body=DisqualifyIn, response=SubmissionOut,
           errors=[403])  # fmt: skip
async def post_contest_disqualify(call: Call) -> SubmissionOut:
    return await contests_of(call).disqualify(
        call.me, call.params["contest_id"], call.params["submission_id"], call.body.reason
    )


@api.route("GET", "/leaderboards/communities", summary="All-time community ranking over finalised contests",
           tag=TAG, query=ListQuery, response=BoardOut)  # fmt: skip
async def get_alltime_communities(call: Call) -> BoardOut:
    return await contests_of(call).alltime(call.me, call.query.limit)


# --- community consent (leaderboards/consent.py) ----------------------------------------------------


@api.route("POST", "/contests/{contest_id}/communities/{community_id}/answer",
           summary="Accept or decline a contest's invitation (the community's owner and admins)", tag=TAG,
           body=consent.AnswerIn, response=InvitationOut, errors=[403, 404, 409])  # fmt: skip
async def post_contest_invitation_answer(call: Call) -> InvitationOut:
    contests = contests_of(call)
    out = await consent.answer(call.request.app[CORE], call.me, "contest", call.params["contest_id"],
                               call.params["community_id"], call.body.accept, contests.clock())  # fmt: skip
    contests.live.touch(call.params["contest_id"])  # the standings list the communities taking part
    return out


@api.route("POST", "/contest-templates/{template_id}/communities/{community_id}/answer",
           summary="Accept or decline a weekly template's invitation (the community's owner and admins)", tag=TAG,
           body=consent.AnswerIn, response=InvitationOut, errors=[403, 404])  # fmt: skip
async def post_template_invitation_answer(call: Call) -> InvitationOut:
    return await consent.answer(call.request.app[CORE], call.me, "template", call.params["template_id"],
                                call.params["community_id"], call.body.accept, contests_of(call).clock())  # fmt: skip


@api.route("GET", "/communities/{community_id}/contest-invitations",
           summary="Contests and weekly templates that invited this community (its owner and admins)", tag=TAG,
           response=consent.CommunityInvitationList, errors=[403])  # fmt: skip
async def get_community_contest_invitations(call: Call) -> consent.CommunityInvitationList:
    return await consent.community_invitations(call.request.app[CORE], call.me, call.params["community_id"])


# --- Socket.IO ------------------------------------------------------------------------------------


class SubscribeIn(Input):
    contest_id: uuid.UUID
    view: Literal["public", "jury"] = "public"


class UnsubscribeIn(Input):
    contest_id: uuid.UUID


@events.on("contest:subscribe", SubscribeIn)
async def subscribe(call: EventCall) -> dict[str, Any]:
    contests: Contests = call.session[SESSION_KEY]
    p: SubscribeIn = call.payload
    contest = await contests.contest(p.contest_id)
    if p.view == "jury" and not await contests.can_manage(call.user, contest):
        raise forbidden("only the contest's managers see the jury view")
    await call.transport.enter_room(call.sid, contest_room(p.contest_id, p.view))
    return {"standings": await contests.snapshot(contest, p.view)}


@events.on("contest:unsubscribe", UnsubscribeIn)
async def unsubscribe(call: EventCall) -> dict[str, Any]:
    p: UnsubscribeIn = call.payload
    for view in ("public", "jury"):
        await call.transport.leave_room(call.sid, contest_room(p.contest_id, view))
    return {}


@events.rights_changed
async def recheck_jury(conn: Connection) -> None:
    """The user's rights changed: jury boards they may no longer see become the public one."""
    contests: Contests | None = conn.session.get(SESSION_KEY)
    if contests is None:
        return
    for room in conn.transport.rooms_of(conn.sid):
        if not (room.startswith("contest:") and room.endswith(":jury")):
            continue
        contest_id = uuid.UUID(room.removeprefix("contest:").removesuffix(":jury"))
        try:
            contest = await contests.contest(contest_id)
        except AppError:
            await conn.transport.leave_room(conn.sid, room)  # the contest is gone
            continue
        if await contests.can_manage(conn.user, contest):
            continue
        await conn.transport.leave_room(conn.sid, room)
        await conn.transport.enter_room(conn.sid, contest_room(contest_id, "public"))
        standings = await contests.snapshot(contest, "public")
        data = {"contest_id": str(contest_id), "view": "public", "standings": standings}
        await conn.transport.emit(DOWNGRADED_EVENT, data, to=conn.sid)
