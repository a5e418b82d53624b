"""Live sessions over REST (the schedule) and Socket.IO (``live:*`` signalling): parse, call the service.

Rules live in :mod:`live.schedule` (who may schedule, see, cancel) and :mod:`live.signalling` (who may
publish, subscribe, raise a hand, invite, mute and stop).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any, cast

from aiohttp import web

from core_api.context import Page, core_of
from core_api.errors import AppError, ErrorCode
from core_api.events import Connection, EventCall, Events
from core_api.http import Api, Call
from live.attendance import Attendance, AttendanceQuery, AttendeeOut
from live.schedule import Schedule
from live.schemas import (
    HandIn,
    LiveSessionIn,
    LiveSessionOut,
    LiveSessionQuery,
    MuteIn,
    OfferIn,
    RecordIn,
    SessionRef,
    StopIn,
    UserAction,
)
from live.signalling import JOINED, LiveNode

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
    summary="Cancel a live session before it goes live",
    description="The session's host, whoever scheduled it, room members of the scheduling role, or an admin. "
    "Its audience gets a `live_session_cancelled` notification; cancelling twice, or a session that went live "
    "(its host ends it with `live:stop`), is 409.",
    tag=TAG,
    response=LiveSessionOut,
    errors=[403, 409],
)
async def post_live_session_cancel(call: Call) -> LiveSessionOut:
    return await schedule_of(call).cancel(call.me, call.params["session_id"])


@api.route(
    "GET",
    "/live-sessions/{session_id}/attendance",
    summary="Who joined a live session, from when to when",
    description="The session's host, whoever scheduled it, room members of `STUDYHALL_LIVE_SCHEDULE_ROOM_ROLE` or "
    "higher, the instructor of its course (even outside the room) and admins; other room members get 403, anyone "
    "else 404. One item per person in order of first arrival: their stretches of presence (a `live:join` to its "
    "leave or disconnect; `left_at` null while still there), `last_left_at` (null while present) and `present_s` "
    "(overlapping stretches, e.g. two tabs, counted once). At most `STUDYHALL_LIVE_ATTENDANCE_MAX_INTERVALS` "
    "stretches are stored per person (past it a join reopens the latest).",
    tag=TAG,
    query=AttendanceQuery,
    response=Page[AttendeeOut],
    errors=[403],
)
async def get_live_attendance(call: Call) -> Page[AttendeeOut]:
    return await Attendance(core_of(call)).report(call.me, call.params["session_id"], call.query)


# --- Socket.IO -----------------------------------------------------------------------------------

events = Events()
NODE = "live.node"
"""Session key under which the server hands every connection the app's :class:`LiveNode`."""


def node_of(session: Mapping[str, Any]) -> LiveNode:
    node = session.get(NODE)
    if node is None:
        raise AppError(ErrorCode.UNAVAILABLE, "this server carries no live sessions")
    return cast(LiveNode, node)


def joined_of(session: MutableMapping[str, Any]) -> set[uuid.UUID]:
    joined: set[uuid.UUID] = session.setdefault(JOINED, set())
    return joined


@events.on("live:join", SessionRef)
async def on_live_join(call: EventCall) -> dict[str, Any]:
    return await node_of(call.session).join(call, call.payload.session_id)


@events.on("live:leave", SessionRef)
async def on_live_leave(call: EventCall) -> None:
    await node_of(call.session).leave(call.sid, joined_of(call.session), call.payload.session_id)


@events.on("live:start", SessionRef)
async def on_live_start(call: EventCall) -> dict[str, Any]:
    return await node_of(call.session).start(call, call.payload.session_id)


@events.on("live:publish", OfferIn)
async def on_live_publish(call: EventCall) -> dict[str, Any]:
    return await node_of(call.session).publish(call, call.payload.session_id, call.payload.sdp)


@events.on("live:subscribe", OfferIn)
async def on_live_subscribe(call: EventCall) -> dict[str, Any]:
    return await node_of(call.session).subscribe(call, call.payload.session_id, call.payload.sdp)


@events.on("live:unsubscribe", SessionRef)
async def on_live_unsubscribe(call: EventCall) -> dict[str, Any]:
    return await node_of(call.session).unsubscribe(call, call.payload.session_id)


@events.on("live:record", RecordIn)
async def on_live_record(call: EventCall) -> dict[str, Any]:
    return await node_of(call.session).record(call, call.payload.session_id, call.payload.on)


@events.on("live:hand", HandIn)
async def on_live_hand(call: EventCall) -> dict[str, Any]:
    return await node_of(call.session).hand(call, call.payload.session_id, call.payload.raised)


@events.on("live:invite", UserAction)
async def on_live_invite(call: EventCall) -> dict[str, Any]:
    return await node_of(call.session).invite(call, call.payload.session_id, call.payload.user_id)


@events.on("live:mute", MuteIn)
async def on_live_mute(call: EventCall) -> dict[str, Any]:
    p = call.payload
    return await node_of(call.session).mute(call, p.session_id, p.user_id, p.kind)


@events.on("live:stop", StopIn)
async def on_live_stop(call: EventCall) -> dict[str, Any]:
    return await node_of(call.session).stop(call, call.payload.session_id, call.payload.user_id)


@events.disconnected
async def on_live_disconnect(conn: Connection) -> None:
    node = conn.session.get(NODE)
    if node is not None and conn.session.get(JOINED):
        await cast(LiveNode, node).leave_all(conn.sid, joined_of(conn.session))


@events.rights_changed
async def on_live_rights_changed(conn: Connection) -> None:
    node = conn.session.get(NODE)
    if node is not None and conn.session.get(JOINED):
        await cast(LiveNode, node).recheck(conn.sid, conn.user, joined_of(conn.session))
