"""Rooms over REST (``/rooms``) and Socket.IO (``room:join``, ``room:join_many``, ``room:leave``): parse, call
the service.

Rules live in :mod:`rooms.access`, use cases in :mod:`rooms.service` and :mod:`rooms.live`.
"""

from __future__ import annotations

from typing import Any

from core_api.context import Page, PageQuery, core_of
from core_api.events import Connection, EventCall, Events
from core_api.http import Api, Call
from rooms import live, service
from rooms.schemas import InviteIn, JoinManyIn, RoomIn, RoomListQuery, RoomMemberOut, RoomOut, RoomRef, RoomRoleIn

api = Api()
events = Events()
TAG = "rooms"

# --- REST ----------------------------------------------------------------------------------------


@api.route(
    "POST",
    "/rooms",
    summary="Open a room; the creator becomes its host",
    tag=TAG,
    body=RoomIn,
    response=RoomOut,
    status=201,
    errors=[403, 404],
)
async def post_room(call: Call) -> RoomOut:
    return await service.create_room(core_of(call), call.me, call.body)


@api.route("GET", "/rooms", summary="Rooms the caller can see", tag=TAG, query=RoomListQuery, response=Page[RoomOut])
async def get_rooms(call: Call) -> Page[RoomOut]:
    return await service.list_rooms(core_of(call), call.me, call.query)


@api.route("GET", "/rooms/{room_id}", summary="One room", tag=TAG, response=RoomOut)
async def get_room(call: Call) -> RoomOut:
    return await service.get_room(core_of(call), call.me, call.params["room_id"])


@api.route(
    "GET",
    "/rooms/{room_id}/members",
    summary="A room's members and their room roles",
    tag=TAG,
    query=PageQuery,
    response=Page[RoomMemberOut],
)
async def get_room_members(call: Call) -> Page[RoomMemberOut]:
    return await service.list_members(core_of(call), call.me, call.params["room_id"], call.query)


@api.route(
    "POST",
    "/rooms/{room_id}/invite",
    summary="Invite a user into a room (host, moderator; only the host invites moderators)",
    tag=TAG,
    body=InviteIn,
    response=RoomMemberOut,
    status=201,
    errors=[403, 409],
)
async def post_room_invite(call: Call) -> RoomMemberOut:
    return await service.invite(core_of(call), call.me, call.params["room_id"], call.body)


@api.route(
    "PUT",
    "/rooms/{room_id}/members/{user_id}",
    summary="Change a member's room role (host); making someone host hands the room over",
    tag=TAG,
    body=RoomRoleIn,
    response=RoomMemberOut,
    errors=[403, 409],
)
async def put_room_member(call: Call) -> RoomMemberOut:
    return await service.set_role(
        core_of(call), call.me, call.params["room_id"], call.params["user_id"], call.body.role
    )


@api.route(
    "POST",
    "/rooms/{room_id}/archive",
    summary="Archive a room (host, admin): readable, no longer joinable",
    tag=TAG,
    response=RoomOut,
    errors=[403],
)
async def post_room_archive(call: Call) -> RoomOut:
    return await service.archive(core_of(call), call.me, call.params["room_id"])


# --- Socket.IO -----------------------------------------------------------------------------------


@events.on("room:join", RoomRef)
async def on_join(call: EventCall) -> dict[str, Any]:
    return await live.join(call, call.payload.room_id)


@events.on("room:join_many", JoinManyIn)
async def on_join_many(call: EventCall) -> dict[str, Any]:
    rooms = [(r.room_id, r.after_seq) for r in call.payload.rooms]
    return {"rooms": await live.join_many(call, rooms)}


@events.on("room:leave", RoomRef)
async def on_leave(call: EventCall) -> None:
    await live.leave(call, call.payload.room_id)


@events.disconnected
async def on_disconnect(conn: Connection) -> None:
    await live.leave_all(conn)


@events.rights_changed
async def on_rights_changed(conn: Connection) -> None:
    await live.recheck(conn)
