"""Who may see, join and act in a room: the one place these rules live.

- ``public`` rooms: any signed-in user may see and join them.
- ``community`` rooms: members of the room's community may see and join them.
- ``private`` rooms: only users with a membership row (invited, or the creator) see and join them.
- Platform admins see and may join every room except direct-message conversations (kind ``dm``):
  only their participants see those (:mod:`rooms.dms`).
- A banned member (``banned_at`` set) cannot join or act; an archived room can be read (history) but
  not joined or written to (``conflict``).
- A room that a user may not see is reported as ``not_found``, never ``forbidden``; except to a user
  banned from it, who is told so.
- Room roles rank ``host`` > ``moderator`` > ``member``; the creator is the host.
"""

from __future__ import annotations

import uuid

from core_api.db import Connection, Record
from core_api.errors import conflict, forbidden, not_found
from core_api.http import Principal


def socket_room(room_id: uuid.UUID | str) -> str:
    """The Socket.IO room of a studyhall room: its live events go there."""
    return f"room:{room_id}"


ROOM_RANK: dict[str, int] = {"member": 1, "moderator": 2, "host": 3}
ROOM_COLUMNS = (
    "r.id, r.name, r.kind, r.visibility, r.community_id, r.course_id, r.created_by, r.created_at,"
    " r.archived_at, r.last_seq, r.slow_mode_s"
)


async def load_room(conn: Connection, room_id: uuid.UUID, *, lock: bool = False) -> Record | None:
    row: Record | None = await conn.fetchrow(
        f"SELECT {ROOM_COLUMNS} FROM rooms r WHERE r.id = $1" + (" FOR UPDATE" if lock else ""), room_id
    )
    return row


async def membership(conn: Connection, room_id: uuid.UUID, user_id: uuid.UUID) -> Record | None:
    row: Record | None = await conn.fetchrow(
        "SELECT room_id, user_id, role, joined_at, muted_until, banned_at FROM room_members"
        " WHERE room_id = $1 AND user_id = $2",
        room_id,
        user_id,
    )
    return row


async def can_see(conn: Connection, user: Principal, room: Record, member: Record | None) -> bool:
    if (user.is_admin and room["kind"] != "dm") or room["visibility"] == "public":
        return True
    if member is not None and member["banned_at"] is None:
        return True
    if room["visibility"] == "community":
        in_community = await conn.fetchval(
            "SELECT 1 FROM community_members WHERE community_id = $1 AND user_id = $2",
            room["community_id"],
            user.id,
        )
        return bool(in_community)
    return False


def visible_sql(user_param: str, admin_param: str) -> str:
    """The SQL twin of :func:`can_see`, for listing: rooms ``r`` LEFT JOINed with the caller's row ``m``.

    ``user_param`` and ``admin_param`` name the query parameters holding the caller's id and admin flag.
    """
    return (
        f"(({admin_param} AND r.kind <> 'dm') OR r.visibility = 'public'"
        f" OR (m.user_id IS NOT NULL AND m.banned_at IS NULL)"
        f" OR (r.visibility = 'community' AND EXISTS (SELECT 1 FROM community_members cm"
        f" WHERE cm.community_id = r.community_id AND cm.user_id = {user_param})))"
    )


def active(member: Record | None) -> Record | None:
    """The membership if it counts for acting in the room: a banned member holds no role."""
    return member if member is not None and member["banned_at"] is None else None


async def visible_room(conn: Connection, user: Principal, room_id: uuid.UUID) -> tuple[Record, Record | None]:
    """The room and the caller's membership (None if not a member); not_found if they may not see it."""
    room = await load_room(conn, room_id)
    if room is None:
        raise not_found("room")
    member = await membership(conn, room_id, user.id)
    await check_visible(conn, user, room, member)
    return room, member


async def check_visible(conn: Connection, user: Principal, room: Record, member: Record | None) -> None:
    """``not_found`` unless the caller may see the room (``forbidden`` for a member it banned)."""
    if not await can_see(conn, user, room, member):
        if member is not None and member["banned_at"] is not None:
            raise forbidden("you are banned from this room")  # they know the room: it banned them
        raise not_found("room")


async def require_member(conn: Connection, user: Principal, room_id: uuid.UUID) -> tuple[Record, Record]:
    """The room and the caller's membership, for acting in it: a joined member who is not banned."""
    room, member = await visible_room(conn, user, room_id)
    if member is None:
        raise forbidden("join the room first")
    if member["banned_at"] is not None:
        raise forbidden("you are banned from this room")
    return room, member


def require_open(room: Record) -> None:
    if room["archived_at"] is not None:
        raise conflict("the room is archived")


def require_room_role(member: Record | None, user: Principal, at_least: str) -> None:
    """Raise unless the member holds ``at_least`` (platform admins always pass)."""
    if user.is_admin:
        return
    if member is None or ROOM_RANK[member["role"]] < ROOM_RANK[at_least]:
        raise forbidden(f"requires room role {at_least} or higher")
