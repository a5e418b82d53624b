"""Direct messages: conversations between two users or a small group, as private rooms of kind ``dm``.

A conversation *is* a room: its participants are its members, so sending, seq order, history, edits,
reactions, typing, live delivery, the read marker (``chat:read``) and the re-checks of rights on open
connections are the rooms' own (:mod:`rooms.chat_service`, :mod:`rooms.live`). What this module adds:

- **Find or create.** ``POST /dms {user_ids}`` answers the one conversation of exactly that set of people
  (the caller included), creating it the first time. Its ``rooms.dm_key`` (the sorted participant ids) is
  unique, so concurrent requests for the same set insert at most one room and all answer it.
- **Who may message whom.** Any signed-in user may start a conversation with existing users, unless one
  of them has blocked the other (``/me/blocks``); at most ``STUDYHALL_DM_MAX_PARTICIPANTS`` people, and at
  most ``STUDYHALL_DM_NEW_RATE_COUNT`` new conversations per user per ``STUDYHALL_DM_NEW_RATE_WINDOW_S``
  (finding an existing one costs nothing).
- **Privacy.** Only participants see a conversation: platform admins do not (:mod:`rooms.access`). Every
  participant is a plain ``member``: nobody hosts or moderates a conversation, so nobody invites others
  into it, mutes, kicks or bans in it; to leave someone's messages behind, block them.
- **Blocks.** Blocking a user refuses new conversations between the two (either way) and closes their
  two-person conversation for writing, both ways, until the block is lifted (the history stays readable).
  Existing group conversations are not affected.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from core_api.context import Core, Page, decode_cursor, new_id, notify, page_of
from core_api.db import Connection, Record
from core_api.errors import AppError, ErrorCode, forbidden, invalid, not_found
from core_api.http import Principal
from rooms.chat_core import excerpt, rate_limited, rate_retry_after
from rooms.dm_schemas import (
    BlockOut,
    BlocksOut,
    ConversationOut,
    DmIn,
    DmListQuery,
    LastMessage,
    Participant,
    UnreadOut,
)

UNREAD_CAP = 1000
BLOCKED_UNTIL = datetime.fromisoformat("9999-12-31T00:00:00+00:00")
"""The ``muted_until`` that marks a member of a blocked two-person conversation: no end, not a moderator's mute."""
TITLE_MAX = 120


def dm_key(user_ids: list[uuid.UUID]) -> str:
    """The participants of a conversation as one string: sorted ids, each once."""
    return ",".join(sorted({str(u) for u in user_ids}))


def is_block_mute(muted_until: datetime | None) -> bool:
    return muted_until is not None and muted_until >= BLOCKED_UNTIL


# $1 is the caller; rows are the caller's conversations with what the list shows.
_CONVERSATIONS = f"""
WITH c AS (
    SELECT r.id, r.created_by, r.created_at, r.last_seq, m.last_read_seq,
           lm.seq AS lm_seq, lm.author_id AS lm_author, lu.display_name AS lm_author_name, lm.body AS lm_body,
           lm.deleted_at AS lm_deleted_at, lm.created_at AS lm_created_at,
           coalesce(lm.created_at, r.created_at) AS activity_at,
           (SELECT count(*) FROM (SELECT 1 FROM chat_messages x
                WHERE x.room_id = r.id AND x.seq > m.last_read_seq AND x.author_id <> $1 AND x.deleted_at IS NULL
                LIMIT {UNREAD_CAP}) u) AS unread,
           (SELECT jsonb_agg(jsonb_build_object('id', pu.id, 'display_name', pu.display_name)
                             ORDER BY pu.display_name, pu.id)
                FROM room_members p JOIN users pu ON pu.id = p.user_id
                WHERE p.room_id = r.id AND p.banned_at IS NULL) AS members
    FROM room_members m
    JOIN rooms r ON r.id = m.room_id AND r.kind = 'dm'
    LEFT JOIN chat_messages lm ON lm.room_id = r.id AND lm.seq = r.last_seq
    LEFT JOIN users lu ON lu.id = lm.author_id
    WHERE m.user_id = $1 AND m.banned_at IS NULL
)
SELECT * FROM c"""


def conversation_out(row: Record, me: uuid.UUID, *, created: bool = False) -> ConversationOut:
    members = [Participant(id=uuid.UUID(p["id"]), display_name=p["display_name"]) for p in row["members"] or []]
    others = [p.display_name for p in members if p.id != me]
    title = ", ".join(others) if others else "Just you"
    last = None
    if row["lm_seq"] is not None:
        deleted = row["lm_deleted_at"] is not None
        last = LastMessage(
            seq=row["lm_seq"],
            author=Participant(id=row["lm_author"], display_name=row["lm_author_name"]),
            excerpt="" if deleted else excerpt(row["lm_body"]),
            deleted=deleted,
            created_at=row["lm_created_at"],
        )
    return ConversationOut(
        id=row["id"],
        title=title[:TITLE_MAX],
        members=members,
        created_by=row["created_by"],
        created_at=row["created_at"],
        last_seq=row["last_seq"],
        last_read_seq=row["last_read_seq"],
        unread=row["unread"],
        last_message=last,
        created=created,
    )


async def _conversation(conn: Connection, user: Principal, room_id: uuid.UUID, *, created: bool) -> ConversationOut:
    row = await conn.fetchrow(f"{_CONVERSATIONS} WHERE c.id = $2", user.id, room_id)
    if row is None:
        raise not_found("conversation")
    return conversation_out(row, user.id, created=created)


async def _blocked_between(conn: Connection, me: uuid.UUID, others: list[uuid.UUID]) -> Record | None:
    """A block between the caller and any of ``others``, either way (the caller's own first)."""
    row: Record | None = await conn.fetchrow(
        "SELECT blocker_id, blocked_id FROM user_blocks"
        " WHERE (blocker_id = $1 AND blocked_id = ANY($2::uuid[]))"
        " OR (blocked_id = $1 AND blocker_id = ANY($2::uuid[]))"
        " ORDER BY (blocker_id = $1) DESC LIMIT 1",
        me,
        others,
    )
    return row


async def start(core: Core, user: Principal, body: DmIn) -> ConversationOut:
    """Find or create the conversation of the caller and ``body.user_ids`` (see the module docstring)."""
    settings = core.settings
    others = sorted({u for u in body.user_ids if u != user.id}, key=str)
    if not others:
        raise invalid("user_ids: name at least one other user")
    if len(others) + 1 > settings.dm_max_participants:
        raise invalid(f"user_ids: a conversation has at most {settings.dm_max_participants} people, you included")
    key = dm_key([user.id, *others])
    async with core.transaction() as tx:
        existing = await tx.conn.fetchval("SELECT id FROM rooms WHERE dm_key = $1", key)
        if existing is not None:
            return await _conversation(tx.conn, user, existing, created=False)
        found = await tx.conn.fetchval("SELECT count(*) FROM users WHERE id = ANY($1::uuid[])", others)
        if found != len(others):
            raise not_found("user")
        block = await _blocked_between(tx.conn, user.id, others)
        if block is not None:
            if block["blocker_id"] == user.id:
                raise forbidden("you have blocked this user: unblock them first")
            raise forbidden("this user does not take messages from you")
        # One starter's concurrent requests queue here, so the count below is exact.
        await tx.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('dm:' || $1::uuid::text, 0))", user.id)
        now: datetime = await tx.conn.fetchval("SELECT clock_timestamp()")
        window_s, limit = settings.dm_new_rate_window_s, settings.dm_new_rate_count
        recent = [
            r["created_at"]
            for r in await tx.conn.fetch(
                "SELECT created_at FROM rooms WHERE kind = 'dm' AND created_by = $1"
                " AND created_at > $2::timestamptz - make_interval(secs => $3) ORDER BY created_at DESC LIMIT $4",
                user.id,
                now,
                window_s,
                limit,
            )
        ]
        wait = rate_retry_after(recent, now, limit, window_s)
        if wait is not None and not user.is_admin:
            raise rate_limited("you are starting new conversations too fast", wait)
        names = await tx.conn.fetch(
            "SELECT display_name FROM users WHERE id = ANY($1::uuid[]) ORDER BY display_name, id", others
        )
        room_id = new_id()
        inserted = await tx.conn.fetchval(
            "INSERT INTO rooms (id, name, kind, visibility, created_by, created_at, dm_key)"
            " VALUES ($1, $2, 'dm', 'private', $3, $4, $5) ON CONFLICT (dm_key) DO NOTHING RETURNING id",
            room_id,
            ", ".join(r["display_name"] for r in names)[:TITLE_MAX] or "Direct message",
            user.id,
            now,
            key,
        )
        if inserted is None:  # a concurrent request created it and committed first: answer that one
            existing = await tx.conn.fetchval("SELECT id FROM rooms WHERE dm_key = $1", key)
            assert existing is not None
            return await _conversation(tx.conn, user, existing, created=False)
        # Others are marked invited by the starter, so no trigger takes the membership for a lost right.
        await tx.conn.execute(
            "INSERT INTO room_members (room_id, user_id, role, invited_by)"
            " SELECT $1, u, 'member', CASE WHEN u = $2 THEN NULL ELSE $2 END FROM unnest($3::uuid[]) AS u",
            room_id,
            user.id,
            [user.id, *others],
        )
        payload: dict[str, Any] = {
            "room_id": str(room_id),
            "by": {"id": str(user.id), "display_name": user.display_name},
        }
        for other in others:
            await notify(tx, other, "dm_started", payload)
        return await _conversation(tx.conn, user, room_id, created=True)


async def list_conversations(core: Core, user: Principal, query: DmListQuery) -> Page[ConversationOut]:
    """The caller's conversations, the most recently active first."""
    at, ident = decode_cursor(query.cursor)
    rows = await core.pool.fetch(
        f"""{_CONVERSATIONS}
            WHERE $2::timestamptz IS NULL OR (c.activity_at, c.id) < ($2, $3)
            ORDER BY c.activity_at DESC, c.id DESC LIMIT $4""",
        user.id,
        at,
        ident,
        query.limit + 1,
    )
    return page_of(rows, query.limit, lambda r: conversation_out(r, user.id), time_key="activity_at")


async def get_conversation(core: Core, user: Principal, room_id: uuid.UUID) -> ConversationOut:
    async with core.pool.acquire() as conn:
        return await _conversation(conn, user, room_id, created=False)


async def unread(core: Core, user: Principal) -> UnreadOut:
    row = await core.pool.fetchrow(
        f"SELECT count(*) FILTER (WHERE unread > 0) AS conversations, coalesce(sum(unread), 0) AS messages"
        f" FROM ({_CONVERSATIONS}) t",
        user.id,
    )
    assert row is not None
    return UnreadOut(conversations=row["conversations"], messages=row["messages"])


# --- blocks --------------------------------------------------------------------------------------


async def _set_pair_closed(conn: Connection, a: uuid.UUID, b: uuid.UUID) -> None:
    """Close (or reopen, when no block remains either way) the two-person conversation of ``a`` and ``b``."""
    blocked = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM user_blocks WHERE (blocker_id, blocked_id) IN (($1, $2), ($2, $1)))", a, b
    )
    await conn.execute(
        "UPDATE room_members m SET muted_until = CASE WHEN $1 THEN $2::timestamptz END"
        " FROM rooms r WHERE r.id = m.room_id AND r.dm_key = $3 AND ($1 OR m.muted_until >= $2::timestamptz)",
        blocked,
        BLOCKED_UNTIL,
        dm_key([a, b]),
    )


async def block(core: Core, user: Principal, target: uuid.UUID) -> BlockOut:
    if target == user.id:
        raise invalid("you cannot block yourself")
    async with core.transaction() as tx:
        name = await tx.conn.fetchval("SELECT display_name FROM users WHERE id = $1", target)
        if name is None:
            raise not_found("user")
        await tx.conn.execute(
            "INSERT INTO user_blocks (blocker_id, blocked_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", user.id, target
        )
        await _set_pair_closed(tx.conn, user.id, target)
        at = await tx.conn.fetchval(
            "SELECT created_at FROM user_blocks WHERE blocker_id = $1 AND blocked_id = $2", user.id, target
        )
    return BlockOut(user_id=target, display_name=name, created_at=at)


async def unblock(core: Core, user: Principal, target: uuid.UUID) -> None:
    async with core.transaction() as tx:
        status = await tx.conn.execute(
            "DELETE FROM user_blocks WHERE blocker_id = $1 AND blocked_id = $2", user.id, target
        )
        if str(status).endswith(" 0"):
            raise not_found("block")
        await _set_pair_closed(tx.conn, user.id, target)


async def list_blocks(core: Core, user: Principal) -> BlocksOut:
    rows = await core.pool.fetch(
        "SELECT b.blocked_id, u.display_name, b.created_at FROM user_blocks b JOIN users u ON u.id = b.blocked_id"
        " WHERE b.blocker_id = $1 ORDER BY b.created_at, b.blocked_id",
        user.id,
    )
    items = [
        BlockOut(user_id=r["blocked_id"], display_name=r["display_name"], created_at=r["created_at"]) for r in rows
    ]
    return BlocksOut(items=items)


def blocked_error() -> AppError:
    return AppError(ErrorCode.FORBIDDEN, "this conversation is closed: one of you has blocked the other")
