"""Live sessions over REST (the schedule) and Socket.IO (``live:*`` signalling): parse, call the service.

Rules live in :mod:`live.schedule` (who may schedule, see, cancel) and :mod:`live.signalling` (who may
publish, subscribe, raise a hand, invite, mute and stop).
"""

from __future__ import annotations

from aiohttp import web

from core_api.context import Page, core_of
from core_api.http import Api, Call
from live.schedule import Schedule
from live.schemas import LiveSessionIn, LiveSessionOut, LiveSessionQuery

api = Api()
TAG = "live"
SCHEDULE = web.AppKey("live_schedule", Schedule)


def schedule_of(call: Call) -> Schedule:
    schedule = call.request.app.get(SCHEDULE)
    return schedule if schedule is not None else Schedule(core_of(call))


@api.route(
    "POST",
    "/rooms/{room_id}/live-sessions",
    summary="Schedule a live session in a room",
    description="Allowed to platform admins, room members holding `STUDYHALL_LIVE_SCHEDULE_ROOM_ROLE` (default "
    "`moderator`) or higher, and the instructor of the named course who is a member of the room. The room's members "
    "and the course's enrolled learners get a `live_session_scheduled` notification, and a `live_session_starting` "
    "one `STUDYHALL_LIVE_REMINDER_LEAD_S` before it starts. Limits: `STUDYHALL_LIVE_SCHEDULE_RATE_COUNT` per "
    "`STUDYHALL_LIVE_SCHEDULE_RATE_WINDOW_S` per user (429), `STUDYHALL_LIVE_MAX_UPCOMING_PER_ROOM` upcoming "
    "sessions per room (409), `STUDYHALL_LIVE_MAX_AHEAD_DAYS` and `STUDYHALL_LIVE_MAX_DURATION_MINUTES` (400). "
    "An archived room answers 409.",
    tag=TAG,
    body=LiveSessionIn,
    response=LiveSessionOut,
    status=201,
    errors=[403, 409, 429],
)
async def post_live_session(call: Call) -> LiveSessionOut:
    return await schedule_of(call).schedule(call.me, call.params["room_id"], call.body)


@api.route(
    "GET",
    "/rooms/{room_id}/live-sessions",
    summary="A room's live sessions, soonest first",
    description="Anyone who can see the room. `include=upcoming` (default) lists those neither cancelled nor over.",
    tag=TAG,
    query=LiveSessionQuery,
    response=Page[LiveSessionOut],
)
async def get_live_sessions(call: Call) -> Page[LiveSessionOut]:
    return await schedule_of(call).list_sessions(call.me, call.params["room_id"], call.query)


@api.route(
    "GET",
    "/live-sessions/{session_id}",
    summary="One live session",
    description="Anyone who can see its room; for anyone else it does not exist (404).",
    tag=TAG,
    response=LiveSessionOut,
)
async def get_live_session(call: Call) -> LiveSessionOut:
    return await schedule_of(call).get(call.me, call.params["session_id"])


@api.route(
    "POST",
    "/live-sessions/{session_id}/cancel",
    summary="Cancel a live session before it ends",
    description="The session's host, whoever scheduled it, room members of the scheduling role, or an admin. "
    "Its audience gets a `live_session_cancelled` notification; cancelling twice, or an ended session, is 409.",
    tag=TAG,
    response=LiveSessionOut,
    errors=[403, 409],
)
async def post_live_session_cancel(call: Call) -> LiveSessionOut:
    return await schedule_of(call).cancel(call.me, call.params["session_id"])
