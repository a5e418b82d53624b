"""Communities and their members.

Anyone signed in may create a community and becomes its ``owner``. A public community is listed for
everyone and anyone may join it. A private one is invisible (404) to non-members, except that joining it
by id answers 403 "invite only": its admins add people instead. Each community has exactly one owner at
all times: the owner hands ownership to another member (becoming an admin) and cannot leave or be removed
while owner. Community admins manage plain members; only the owner manages admins. Platform admins may
do everything an owner may, in every community.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import asyncpg
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from core_api.context import (
    Core,
    Page,
    PageQuery,
    SearchText,
    Tx,
    audit,
    core_of,
    decode_cursor,
    new_id,
    notify,
    page_of,
    rights_changed,
)
from core_api.db import Connection, Record
from core_api.errors import conflict, forbidden, invalid, not_found
from core_api.http import Api, Call, Input, Principal, Reply
from core_api.rbac import COMMUNITY_RANK, CommunityRole

api = Api()
TAG = "communities"
OWNER, ADMIN, MEMBER = COMMUNITY_RANK["owner"], COMMUNITY_RANK["admin"], COMMUNITY_RANK["member"]

# --- schemas -------------------------------------------------------------------------------------


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable (no control characters)")
    return value


CommunityName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80), AfterValidator(_printable)
]
Description = Annotated[str, StringConstraints(max_length=2000)]  # NUL is refused for every body in http.py
Visibility = Literal["public", "private"]


class CommunityIn(Input):
    name: CommunityName = Field(description="Unique, ignoring case.")
    description: Description = ""
    visibility: Visibility = Field("public", description="`private`: invite only, hidden from non-members.")


class CommunityPatch(Input):
    name: CommunityName | None = None
    description: Description | None = None
    visibility: Visibility | None = None


class CommunityOut(BaseModel):
    id: uuid.UUID
    name: str
    description: str
    visibility: Visibility
    created_by: uuid.UUID
    created_at: datetime
    member_count: int
    my_role: CommunityRole | None = Field(description="The caller's community role; null when not a member.")


class CommunityListQuery(PageQuery):
    mine: bool = Field(False, description="Only communities the caller belongs to.")
    q: SearchText | None = Field(
        None, min_length=1, max_length=80, description="Only communities whose name contains this (any case)."
    )


class MemberOut(BaseModel):
    user_id: uuid.UUID
    display_name: str
    role: CommunityRole
    joined_at: datetime


class MemberAdd(Input):
    user_id: uuid.UUID
    role: Literal["admin", "member"] = Field("member", description="`admin` only when the owner adds.")


class MemberRoleIn(Input):
    role: CommunityRole = Field(description="Setting another member to `owner` hands ownership over.")


# --- rules ---------------------------------------------------------------------------------------


def acting_rank(user: Principal, my_role: str | None) -> int:
    """How much the caller may do in a community: platform admins act as its owner."""
    if user.is_admin:
        return OWNER
    return COMMUNITY_RANK[my_role] if my_role is not None else 0


def check_role_change(actor: int, before: str, after: str, *, on_self: bool) -> None:
    """Raise unless an actor of rank ``actor`` may move a member from ``before`` to ``after``."""
    if actor < ADMIN:
        raise forbidden("requires community role admin or higher")
    if actor < OWNER:
        if after != "member":
            raise forbidden("only the owner can make someone admin or owner")
        if before != "member" and not on_self:
            raise forbidden("only the owner can change an admin's role")
        return
    if before == "owner" and after != "owner":
        raise conflict("hand ownership to another member first; a community always has an owner")


def check_removal(actor: int, target: str) -> None:
    """Raise unless an actor of rank ``actor`` may remove a member whose role is ``target``."""
    if target == "owner":
        raise forbidden("nobody can remove the owner; ownership must be handed over first")
    if actor < ADMIN:
        raise forbidden("requires community role admin or higher")
    if target == "admin" and actor < OWNER:
        raise forbidden("only the owner can remove an admin")


# --- service -------------------------------------------------------------------------------------

# $1 is always the caller, so every row carries the caller's own role.
_COMMUNITY_COLUMNS = """c.id, c.name, c.description, c.visibility, c.created_by, c.created_at,
    (SELECT count(*) FROM community_members m WHERE m.community_id = c.id) AS member_count,
    (SELECT m.role FROM community_members m WHERE m.community_id = c.id AND m.user_id = $1) AS my_role"""
_MEMBER_COLUMNS = "u.id, u.display_name, m.role, m.joined_at"


def community_out(r: Record) -> CommunityOut:
    return CommunityOut(**dict(r))


def member_out(r: Record) -> MemberOut:
    return MemberOut(user_id=r["id"], display_name=r["display_name"], role=r["role"], joined_at=r["joined_at"])


async def fetch_community(
    conn: Connection, user: Principal, community_id: uuid.UUID, *, lock: Literal["", "UPDATE", "SHARE"] = ""
) -> Record | None:
    """The community with the caller's role in it, visible or not.

    ``lock`` (``"UPDATE"`` or ``"SHARE"``) locks the community row, serialising membership changes.
    """
    row: Record | None = await conn.fetchrow(
        f"SELECT {_COMMUNITY_COLUMNS} FROM communities c WHERE c.id = $2" + (f" FOR {lock} OF c" if lock else ""),
        user.id,
        community_id,
    )
    return row


def can_see(community: Record, user: Principal) -> bool:
    return bool(community["visibility"] == "public" or community["my_role"] is not None or user.is_admin)


async def visible_community(
    conn: Connection, user: Principal, community_id: uuid.UUID, *, lock: Literal["", "UPDATE", "SHARE"] = ""
) -> Record:
    """The community if the caller may see it; a private one is not found unless they belong to it."""
    row = await fetch_community(conn, user, community_id, lock=lock)
    if row is None or not can_see(row, user):
        raise not_found("community")
    return row


async def managed_community(
    conn: Connection, user: Principal, community_id: uuid.UUID, at_least: int = ADMIN
) -> tuple[Record, int]:
    """The community, locked, and the caller's acting rank, if that rank is at least ``at_least``."""
    community = await visible_community(conn, user, community_id, lock="UPDATE")
    rank = acting_rank(user, community["my_role"])
    if rank < at_least:
        raise forbidden("requires community role admin or higher")
    return community, rank


async def find_member(conn: Connection, community_id: uuid.UUID, user_id: uuid.UUID) -> Record:
    row = await conn.fetchrow(
        f"SELECT {_MEMBER_COLUMNS} FROM community_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.community_id = $1 AND m.user_id = $2",
        community_id,
        user_id,
    )
    if row is None:
        raise not_found("member")
    return row


async def list_communities(core: Core, user: Principal, query: CommunityListQuery) -> Page[CommunityOut]:
    at, ident = decode_cursor(query.cursor)
    rows = await core.pool.fetch(
        f"""SELECT * FROM (SELECT {_COMMUNITY_COLUMNS} FROM communities c
                WHERE ($2::timestamptz IS NULL OR (c.created_at, c.id) > ($2, $3))) c
            WHERE CASE WHEN $5 THEN c.my_role IS NOT NULL
                       ELSE c.visibility = 'public' OR c.my_role IS NOT NULL OR $6 END
              AND ($7::text IS NULL OR strpos(lower(c.name), lower($7)) > 0)
            ORDER BY c.created_at, c.id LIMIT $4""",
        user.id,
        at,
        ident,
        query.limit + 1,
        query.mine,
        user.is_admin,
        query.q,
    )
    return page_of(rows, query.limit, community_out)


async def create_community(core: Core, user: Principal, body: CommunityIn) -> Record:
    async with core.transaction() as tx:
        community_id = new_id()
        try:
            await tx.conn.execute(
                "INSERT INTO communities (id, name, description, visibility, created_by) VALUES ($1, $2, $3, $4, $5)",
                community_id,
                body.name,
                body.description,
                body.visibility,
                user.id,
            )
        except asyncpg.UniqueViolationError:
            raise conflict("a community with this name already exists", name=body.name) from None
        await tx.conn.execute(
            "INSERT INTO community_members (community_id, user_id, role) VALUES ($1, $2, 'owner')",
            community_id,
            user.id,
        )
        return await visible_community(tx.conn, user, community_id)


async def update_community(core: Core, user: Principal, community_id: uuid.UUID, body: CommunityPatch) -> Record:
    async with core.transaction() as tx:
        before, _ = await managed_community(tx.conn, user, community_id)
        try:
            await tx.conn.execute(
                "UPDATE communities SET name = coalesce($2, name), description = coalesce($3, description),"
                " visibility = coalesce($4, visibility) WHERE id = $1",
                community_id,
                body.name,
                body.description,
                body.visibility,
            )
        except asyncpg.UniqueViolationError:
            raise conflict("a community with this name already exists", name=body.name) from None
        after = await visible_community(tx.conn, user, community_id)
        changed = {k: after[k] for k in ("name", "description", "visibility") if before[k] != after[k]}
        if changed:
            await audit(tx, user.id, "community.updated", "community", community_id, **changed)
        return after


async def join_community(core: Core, user: Principal, community_id: uuid.UUID) -> Record:
    async with core.transaction() as tx:
        # SHARE: a concurrent switch to private either happens before the join or waits for it.
        community = await fetch_community(tx.conn, user, community_id, lock="SHARE")
        if community is None:
            raise not_found("community")
        if community["my_role"] is not None:
            return community
        # Whoever holds a private community's id learns only that it is invite only, nothing more.
        if not can_see(community, user):
            raise forbidden("this community is invite only")
        await tx.conn.execute(
            "INSERT INTO community_members (community_id, user_id, role) VALUES ($1, $2, 'member')"
            " ON CONFLICT DO NOTHING",
            community_id,
            user.id,
        )
        return await visible_community(tx.conn, user, community_id)


async def _end_membership(tx: Tx, community_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Take a user out of a community, and tell their open connections.

    The database takes them out of the community's ``community`` rooms in the same transaction (a
    trigger, migration 0011), so neither REST, ``room:join``, history nor sending lets them back in.
    After the commit every node re-checks the user's open connections: they leave those rooms
    (``room:removed``), the rooms' workspace editors (closed with 4403) and the community's jury boards.
    """
    await tx.conn.execute(
        "DELETE FROM community_members WHERE community_id = $1 AND user_id = $2", community_id, user_id
    )
    rights_changed(tx, user_id)


async def leave_community(core: Core, user: Principal, community_id: uuid.UUID) -> None:
    async with core.transaction() as tx:
        community = await visible_community(tx.conn, user, community_id, lock="UPDATE")
        if community["my_role"] == "owner":
            raise conflict("the owner cannot leave; hand ownership to another member first")
        if community["my_role"] is None:
            return
        await _end_membership(tx, community_id, user.id)


async def list_members(core: Core, user: Principal, community_id: uuid.UUID, query: PageQuery) -> Page[MemberOut]:
    at, ident = decode_cursor(query.cursor)
    async with core.pool.acquire() as conn:
        await visible_community(conn, user, community_id)
        rows = await conn.fetch(
            f"""SELECT {_MEMBER_COLUMNS} FROM community_members m JOIN users u ON u.id = m.user_id
                WHERE m.community_id = $1
                  AND ($2::timestamptz IS NULL OR (m.joined_at, m.user_id) > ($2, $3))
                ORDER BY m.joined_at, m.user_id LIMIT $4""",
            community_id,
            at,
            ident,
            query.limit + 1,
        )
    return page_of(rows, query.limit, member_out, time_key="joined_at")


async def add_member(core: Core, user: Principal, community_id: uuid.UUID, body: MemberAdd) -> Record:
    async with core.transaction() as tx:
        community, rank = await managed_community(tx.conn, user, community_id)
        if body.role == "admin" and rank < OWNER:
            raise forbidden("only the owner can make someone admin")
        if not await tx.conn.fetchval("SELECT 1 FROM users WHERE id = $1", body.user_id):
            raise not_found("user")
        inserted = await tx.conn.fetchval(
            "INSERT INTO community_members (community_id, user_id, role) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING true",
            community_id,
            body.user_id,
            body.role,
        )
        if not inserted:
            raise conflict("this user is already a member", user_id=str(body.user_id))
        await audit(
            tx,
            user.id,
            "community.member_added",
            "community",
            community_id,
            user_id=str(body.user_id),
            role=body.role,
        )
        await notify(
            tx,
            body.user_id,
            "community_added",
            {
                "community_id": str(community_id),
                "community_name": community["name"],
                "role": body.role,
                "added_by": str(user.id),
            },
        )
        return await find_member(tx.conn, community_id, body.user_id)


async def _record_role_change(
    tx: Tx, actor: Principal, community: Record, user_id: uuid.UUID, before: str, after: str
) -> None:
    await audit(
        tx,
        actor.id,
        "community.role_changed",
        "community",
        community["id"],
        user_id=str(user_id),
        before=before,
        after=after,
    )
    if user_id != actor.id:
        payload = {"community_id": str(community["id"]), "community_name": community["name"], "role": after}
        await notify(tx, user_id, "community_role_changed", {**payload, "previous": before})


async def set_member_role(
    core: Core, user: Principal, community_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> Record:
    async with core.transaction() as tx:
        community, rank = await managed_community(tx.conn, user, community_id, at_least=MEMBER)
        target = await find_member(tx.conn, community_id, user_id)
        before = target["role"]
        check_role_change(rank, before, role, on_self=user_id == user.id)
        if before == role:
            return target
        previous: list[Record] = []
        if role == "owner":
            previous = await tx.conn.fetch(
                "UPDATE community_members SET role = 'admin' WHERE community_id = $1 AND role = 'owner'"
                " RETURNING user_id",
                community_id,
            )
            for r in previous:
                await _record_role_change(tx, user, community, r["user_id"], "owner", "admin")
        await tx.conn.execute(
            "UPDATE community_members SET role = $3 WHERE community_id = $1 AND user_id = $2",
            community_id,
            user_id,
            role,
        )
        await _record_role_change(tx, user, community, user_id, before, role)
        # What they may manage changed (a contest's jury board): their open connections re-check it.
        rights_changed(tx, user_id, *(r["user_id"] for r in previous))
        return await find_member(tx.conn, community_id, user_id)


async def remove_member(core: Core, user: Principal, community_id: uuid.UUID, user_id: uuid.UUID) -> None:
    async with core.transaction() as tx:
        community, rank = await managed_community(tx.conn, user, community_id, at_least=MEMBER)
        target = await find_member(tx.conn, community_id, user_id)
        check_removal(rank, target["role"])
        await _end_membership(tx, community_id, user_id)
        await audit(
            tx,
            user.id,
            "community.member_removed",
            "community",
            community_id,
            user_id=str(user_id),
            role=target["role"],
        )
        await notify(
            tx,
            user_id,
            "community_removed",
            {"community_id": str(community_id), "community_name": community["name"], "removed_by": str(user.id)},
        )


# --- handlers ------------------------------------------------------------------------------------


@api.route(
    "GET",
    "/communities",
    summary="Public communities and the private ones the caller belongs to",
    tag=TAG,
    query=CommunityListQuery,
    response=Page[CommunityOut],
)
async def get_communities(call: Call) -> Page[CommunityOut]:
    return await list_communities(core_of(call), call.me, call.query)


@api.route(
    "POST",
    "/communities",
    summary="Create a community; the caller becomes its owner",
    tag=TAG,
    body=CommunityIn,
    response=CommunityOut,
    status=201,
    errors=[409],
)
async def post_community(call: Call) -> CommunityOut:
    return community_out(await create_community(core_of(call), call.me, call.body))


@api.route("GET", "/communities/{community_id}", summary="One community", tag=TAG, response=CommunityOut)
async def get_community(call: Call) -> CommunityOut:
    async with core_of(call).pool.acquire() as conn:
        return community_out(await visible_community(conn, call.me, call.params["community_id"]))


@api.route(
    "PATCH",
    "/communities/{community_id}",
    summary="Edit a community (community admin or owner)",
    tag=TAG,
    body=CommunityPatch,
    response=CommunityOut,
    errors=[403, 409],
)
async def patch_community(call: Call) -> CommunityOut:
    body = call.body
    if body.name is None and body.description is None and body.visibility is None:
        raise invalid("nothing to change")
    return community_out(await update_community(core_of(call), call.me, call.params["community_id"], body))


@api.route(
    "POST",
    "/communities/{community_id}/join",
    summary="Join a public community (idempotent)",
    tag=TAG,
    response=CommunityOut,
    errors=[403],
)
async def post_community_join(call: Call) -> CommunityOut:
    return community_out(await join_community(core_of(call), call.me, call.params["community_id"]))


@api.route(
    "POST",
    "/communities/{community_id}/leave",
    summary="Leave a community (the owner must hand ownership over first)",
    tag=TAG,
    status=204,
    errors=[409],
)
async def post_community_leave(call: Call) -> Reply:
    await leave_community(core_of(call), call.me, call.params["community_id"])
    return Reply(None, 204)


@api.route(
    "GET",
    "/communities/{community_id}/members",
    summary="A community's members, in joining order",
    tag=TAG,
    query=PageQuery,
    response=Page[MemberOut],
)
async def get_community_members(call: Call) -> Page[MemberOut]:
    return await list_members(core_of(call), call.me, call.params["community_id"], call.query)


@api.route(
    "POST",
    "/communities/{community_id}/members",
    summary="Add a user to a community (community admin or owner)",
    tag=TAG,
    body=MemberAdd,
    response=MemberOut,
    status=201,
    errors=[403, 409],
)
async def post_community_member(call: Call) -> MemberOut:
    return member_out(await add_member(core_of(call), call.me, call.params["community_id"], call.body))


@api.route(
    "PUT",
    "/communities/{community_id}/members/{user_id}",
    summary="Change a member's role; setting `owner` hands ownership over (owner)",
    tag=TAG,
    body=MemberRoleIn,
    response=MemberOut,
    errors=[403, 409],
)
async def put_community_member_role(call: Call) -> MemberOut:
    p = call.params
    return member_out(await set_member_role(core_of(call), call.me, p["community_id"], p["user_id"], call.body.role))


@api.route(
    "DELETE",
    "/communities/{community_id}/members/{user_id}",
    summary="Remove a member (admins remove members, the owner also removes admins)",
    tag=TAG,
    status=204,
    errors=[403],
)
async def delete_community_member(call: Call) -> Reply:
    await remove_member(core_of(call), call.me, call.params["community_id"], call.params["user_id"])
    return Reply(None, 204)
