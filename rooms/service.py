"""Room use cases: create, list, read, invite, change roles, archive; and the chat history reader.

Who may do what is decided by :mod:`rooms.access`; these functions apply it, change state inside one
transaction and publish after commit. The live side (joining over Socket.IO, presence) is in
:mod:`rooms.live`.
"""

from __future__ import annotations

import uuid

from core_api.communities import visible_community
from core_api.context import (
    Core,
    Page,
    PageQuery,
    audit,
    decode_cursor,
    new_id,
    notify,
    page_of,
    rights_changed,
    room_rights_changed,
)
from core_api.courses import visible_course
from core_api.db import Connection, Record
from core_api.errors import AppError, ErrorCode, conflict, forbidden, invalid, not_found
from core_api.http import Principal
from rooms.access import (
    ROOM_COLUMNS,
    active,
    check_visible,
    membership,
    require_open,
    require_room_role,
    visible_room,
    visible_sql,
)
from rooms.schemas import (
    InviteIn,
    RoomIn,
    RoomListQuery,
    RoomMemberOut,
    RoomOut,
    RoomRole,
)

# $1 is always the caller: every row carries the caller's own (unbanned) role.
_ROOM_VIEW = f"""{ROOM_COLUMNS},
    (SELECT count(*) FROM room_members x WHERE x.room_id = r.id AND x.banned_at IS NULL) AS member_count,
    CASE WHEN m.banned_at IS NULL THEN m.role END AS my_role
    FROM rooms r LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = $1"""
_ROOM_VIEW_AND_MEMBER = f"""{ROOM_COLUMNS},
    (SELECT count(*) FROM room_members x WHERE x.room_id = r.id AND x.banned_at IS NULL) AS member_count,
    CASE WHEN m.banned_at IS NULL THEN m.role END AS my_role,
    m AS member
    FROM rooms r LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = $1"""
_MEMBER_COLUMNS = "m.user_id AS id, u.display_name, m.role, m.joined_at"

# --- reading -------------------------------------------------------------------------------------


def room_out(r: Record) -> RoomOut:
    return RoomOut(
        id=r["id"],
        name=r["name"],
        kind=r["kind"],
        visibility=r["visibility"],
        community_id=r["community_id"],
        course_id=r["course_id"],
        created_by=r["created_by"],
        created_at=r["created_at"],
        archived_at=r["archived_at"],
        member_count=r["member_count"],
        my_role=r["my_role"],
    )


def member_out(r: Record) -> RoomMemberOut:
    return RoomMemberOut(user_id=r["id"], display_name=r["display_name"], role=r["role"], joined_at=r["joined_at"])


async def room_view(conn: Connection, user: Principal, room_id: uuid.UUID) -> RoomOut:
    """The room as ``user`` sees it (their role, the member count); access must be checked already."""
    row = await conn.fetchrow(f"SELECT {_ROOM_VIEW} WHERE r.id = $2", user.id, room_id)
    if row is None:
        raise not_found("room")
    return room_out(row)


async def visible_room_view(
    conn: Connection, user: Principal, room_id: uuid.UUID
) -> tuple[Record, Record | None, RoomOut]:
    """:func:`~rooms.access.visible_room` and :func:`room_view` in one query (a rejoin reads all three): the room,
    the caller's membership (its ``room_members`` row, None if not a member) and the room as they see it."""
    row = await conn.fetchrow(f"SELECT {_ROOM_VIEW_AND_MEMBER} WHERE r.id = $2", user.id, room_id)
    if row is None:
        raise not_found("room")
    member: Record | None = row["member"]
    await check_visible(conn, user, row, member)
    return row, member, room_out(row)


async def get_room(core: Core, user: Principal, room_id: uuid.UUID) -> RoomOut:
    async with core.pool.acquire() as conn:
        await visible_room(conn, user, room_id)
        return await room_view(conn, user, room_id)


async def list_rooms(core: Core, user: Principal, query: RoomListQuery) -> Page[RoomOut]:
    at, ident = decode_cursor(query.cursor)
    rows = await core.pool.fetch(
        f"""SELECT {_ROOM_VIEW}
            WHERE ($2::timestamptz IS NULL OR (r.created_at, r.id) > ($2, $3))
              AND ($5::uuid IS NULL OR r.community_id = $5)
              AND ($6::text IS NULL OR r.kind = $6)
              AND (r.kind <> 'dm' OR $6::text = 'dm')
              AND ($7 OR r.archived_at IS NULL)
              AND {visible_sql("$1", "$8")}
              AND (NOT $9 OR (m.user_id IS NOT NULL AND m.banned_at IS NULL))
            ORDER BY r.created_at, r.id LIMIT $4""",
        user.id,
        at,
        ident,
        query.limit + 1,
        query.community_id,
        query.kind,
        query.include_archived,
        user.is_admin,
        query.mine,
    )
    return page_of(rows, query.limit, room_out)


async def list_members(core: Core, user: Principal, room_id: uuid.UUID, query: PageQuery) -> Page[RoomMemberOut]:
    """The room's members (banned ones left out), in the order they joined."""
    at, ident = decode_cursor(query.cursor)
    async with core.pool.acquire() as conn:
        await visible_room(conn, user, room_id)
        rows = await conn.fetch(
            f"""SELECT {_MEMBER_COLUMNS} FROM room_members m JOIN users u ON u.id = m.user_id
                WHERE m.room_id = $1 AND m.banned_at IS NULL
                  AND ($2::timestamptz IS NULL OR (m.joined_at, m.user_id) > ($2, $3))
                ORDER BY m.joined_at, m.user_id LIMIT $4""",
            room_id,
            at,
            ident,
            query.limit + 1,
        )
    return page_of(rows, query.limit, member_out, time_key="joined_at")


async def _find_member(conn: Connection, room_id: uuid.UUID, user_id: uuid.UUID) -> RoomMemberOut:
    row = await conn.fetchrow(
        f"SELECT {_MEMBER_COLUMNS} FROM room_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.room_id = $1 AND m.user_id = $2",
        room_id,
        user_id,
    )
    if row is None:
        raise not_found("member")
    return member_out(row)


# --- changing ------------------------------------------------------------------------------------


async def create_room(core: Core, user: Principal, body: RoomIn) -> RoomOut:
    """Create a room; the creator becomes its host."""
    if body.visibility == "community" and body.community_id is None:
        raise invalid("a community room needs community_id")
    async with core.transaction() as tx:
        if body.community_id is not None:
            community = await visible_community(tx.conn, user, body.community_id, lock="SHARE")
            if community["my_role"] is None and not user.is_admin:
                raise forbidden("only members of a community can open rooms in it")
        if body.course_id is not None:
            await visible_course(tx.conn, user, body.course_id)
        room_id = new_id()
        await tx.conn.execute(
            "INSERT INTO rooms (id, name, kind, visibility, community_id, course_id, created_by)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            room_id,
            body.name,
            body.kind,
            body.visibility,
            body.community_id,
            body.course_id,
            user.id,
        )
        await tx.conn.execute(
            "INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, 'host')", room_id, user.id
        )
        return await room_view(tx.conn, user, room_id)


async def _lock_room(conn: Connection, room_id: uuid.UUID) -> None:
    """Serialise role changes, invitations and archiving of one room."""
    await conn.execute("SELECT 1 FROM rooms WHERE id = $1 FOR UPDATE", room_id)


async def invite(core: Core, user: Principal, room_id: uuid.UUID, body: InviteIn) -> RoomMemberOut:
    """Add a member (host, moderator; only the host adds moderators) and notify them."""
    async with core.transaction() as tx:
        await _lock_room(tx.conn, room_id)
        room, member = await visible_room(tx.conn, user, room_id)
        acting = active(member)
        require_room_role(acting, user, "moderator")
        if body.role == "moderator" and not user.is_admin and (acting is None or acting["role"] != "host"):
            raise forbidden("only the host can invite moderators")
        require_open(room)
        if body.email is not None:
            invitee = await tx.conn.fetchval("SELECT id FROM users WHERE lower(email) = lower($1)", body.email.strip())
            if invitee is None:
                raise AppError(ErrorCode.NOT_FOUND, "no account has this email")
        else:
            invitee = await tx.conn.fetchval("SELECT id FROM users WHERE id = $1", body.user_id)
            if invitee is None:
                raise not_found("user")
        existing = await membership(tx.conn, room_id, invitee)
        if existing is not None:
            if existing["banned_at"] is not None:
                raise conflict("this user is banned from the room", user_id=str(invitee))
            raise conflict("this user is already a member", user_id=str(invitee))
        await tx.conn.execute(
            "INSERT INTO room_members (room_id, user_id, role, invited_by) VALUES ($1, $2, $3, $4)",
            room_id,
            invitee,
            body.role,
            user.id,
        )
        await notify(
            tx,
            invitee,
            "room_invite",
            {
                "room_id": str(room_id),
                "room_name": room["name"],
                "kind": room["kind"],
                "role": body.role,
                "invited_by": str(user.id),
                "invited_by_name": user.display_name,
            },
        )
        return await _find_member(tx.conn, room_id, invitee)


async def set_role(
    core: Core, user: Principal, room_id: uuid.UUID, user_id: uuid.UUID, role: RoomRole
) -> RoomMemberOut:
    """Change a member's room role (host, admin). Making someone host hands the room over."""
    async with core.transaction() as tx:
        await _lock_room(tx.conn, room_id)
        room, member = await visible_room(tx.conn, user, room_id)
        require_room_role(active(member), user, "host")
        require_open(room)
        target = await membership(tx.conn, room_id, user_id)
        if target is None:
            raise not_found("member")
        if target["banned_at"] is not None:
            raise conflict("this member is banned from the room", user_id=str(user_id))
        before = target["role"]
        if before == role:
            return await _find_member(tx.conn, room_id, user_id)
        if before == "host":
            raise conflict("a room always has a host: make another member host instead")
        previous_hosts: list[uuid.UUID] = []
        if role == "host":
            previous_hosts = [
                r["user_id"]
                for r in await tx.conn.fetch(
                    "UPDATE room_members SET role = 'moderator' WHERE room_id = $1 AND role = 'host' RETURNING user_id",
                    room_id,
                )
            ]
        await tx.conn.execute(
            "UPDATE room_members SET role = $3 WHERE room_id = $1 AND user_id = $2", room_id, user_id, role
        )
        await audit(tx, user.id, "room.role_changed", "room", room_id, user_id=str(user_id), before=before, after=role)
        # A room role decides what one may do with the room's workspaces: open editors re-check it.
        rights_changed(tx, user_id, *previous_hosts)
        if user_id != user.id:
            payload = {"room_id": str(room_id), "room_name": room["name"], "role": role, "previous": before}
            await notify(tx, user_id, "room_role_changed", payload)
        return await _find_member(tx.conn, room_id, user_id)


async def archive(core: Core, user: Principal, room_id: uuid.UUID) -> RoomOut:
    """Archive a room (host, admin): it stays readable but cannot be joined or written to.

    Connected members hear ``room:archived {room_id}`` once the change is committed, and the open editors
    of its workspaces become read-only (as the access rules make everyone but admins in an archived room).
    """
    async with core.transaction() as tx:
        await _lock_room(tx.conn, room_id)
        room, member = await visible_room(tx.conn, user, room_id)
        require_room_role(active(member), user, "host")
        if room["archived_at"] is None:
            await tx.conn.execute("UPDATE rooms SET archived_at = now() WHERE id = $1", room_id)
            await audit(tx, user.id, "room.archived", "room", room_id, name=room["name"])
            tx.publish(f"room:{room_id}", {"event": "room:archived", "data": {"room_id": str(room_id)}})
            room_rights_changed(tx, room_id)  # its workspaces' open editors become read-only
        return await room_view(tx.conn, user, room_id)
