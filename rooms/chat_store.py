"""Chat's SQL: messages, reactions, room moderation state and the live connection registry.

Functions take a connection (inside the caller's transaction) and return records; no rules live here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg

from core_api.context import new_id
from core_api.db import Connection, Record

_MESSAGE = (
    "SELECT m.id, m.room_id, m.seq, m.author_id, u.display_name, m.body, m.created_at, m.edited_at,"
    " m.deleted_at, m.deleted_by, m.rev FROM chat_messages m JOIN users u ON u.id = m.author_id"
)
_PAGE = (
    "SELECT m.id, m.room_id, m.seq, m.author_id, u.display_name, m.body, m.created_at, m.edited_at,"
    " m.deleted_at, m.deleted_by, m.rev, (SELECT json_object_agg(g.emoji, g.n ORDER BY g.first, g.emoji) FROM"
    " (SELECT emoji, count(*) AS n, min(created_at) AS first FROM chat_reactions r WHERE r.message_id = m.id"
    " GROUP BY emoji) g) AS reactions FROM chat_messages m JOIN users u ON u.id = m.author_id"
)
""":data:`_MESSAGE` with each message's reaction counts (``reactions``: emoji → count in order of first use, or
NULL), as :func:`reactions` reads them: a page of history costs one round trip, not two."""
_RETURNING = (
    " RETURNING id, room_id, seq, author_id, body, created_at, edited_at, deleted_at, deleted_by, rev)"
    " SELECT m.id, m.room_id, m.seq, m.author_id, u.display_name, m.body, m.created_at, m.edited_at,"
    " m.deleted_at, m.deleted_by, m.rev FROM m JOIN users u ON u.id = m.author_id"
)


# --- messages ------------------------------------------------------------------------------------


async def message(conn: Connection, room_id: uuid.UUID, message_id: uuid.UUID, *, lock: bool = False) -> Record | None:
    row: Record | None = await conn.fetchrow(
        _MESSAGE + " WHERE m.room_id = $1 AND m.id = $2" + (" FOR UPDATE OF m" if lock else ""), room_id, message_id
    )
    return row


async def message_by_client_id(
    conn: Connection, room_id: uuid.UUID, author_id: uuid.UUID, client_msg_id: str
) -> Record | None:
    row: Record | None = await conn.fetchrow(
        _MESSAGE + " WHERE m.room_id = $1 AND m.author_id = $2 AND m.client_msg_id = $3",
        room_id,
        author_id,
        client_msg_id,
    )
    return row


class Pace(NamedTuple):
    """The sender's pace limits for :func:`post`: at most ``rate_count`` messages per ``rate_window_s``
    anywhere; ``admin`` (a platform admin) is exempt from rooms' slow mode, as moderators and hosts are."""

    rate_window_s: float
    rate_count: int
    admin: bool


class PostRefused(Exception):
    """``chat_post`` refused the message; nothing was written (the claimed seq rolled back)."""

    def __init__(self, reason: str, detail: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


_REFUSALS = {
    "SH401": "not_member",
    "SH404": "no_room",
    "SH403": "muted",
    "SH429": "rate",
    "SH420": "slow",
    "SH409": "already_sent",
}


def _times(detail: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in detail.items():
        if isinstance(value, str):
            out[key] = datetime.fromisoformat(value)
        elif isinstance(value, list):
            out[key] = [datetime.fromisoformat(v) for v in value]
        else:
            out[key] = value
    return out


async def post(
    conn: Connection,
    room_id: uuid.UUID,
    author_id: uuid.UUID,
    client_msg_id: str,
    body: str,
    pace: Pace,
) -> Record:
    """Check the author's membership, claim the room's next seq, check the sender's pace and insert, in
    one statement (``chat_post``).

    Returns the message with ``fresh`` (False: the author had already sent ``client_msg_id`` here, and
    that message is returned). Raises :class:`PostRefused` with the refusal and its times otherwise.
    Outside a transaction the commit comes with the same round trip, so the room's lock is held only
    while the function runs.
    """
    try:
        row: Record | None = await conn.fetchrow(
            "SELECT * FROM chat_post($1, $2, $3, $4, $5, $6, $7, $8)",
            room_id,
            new_id(),
            author_id,
            client_msg_id,
            body,
            pace.rate_window_s,
            pace.rate_count,
            pace.admin,
        )
    except asyncpg.PostgresError as exc:
        reason = _REFUSALS.get(getattr(exc, "sqlstate", "") or "")
        if reason is None:
            raise
        detail = getattr(exc, "detail", None)
        raise PostRefused(reason, _times(json.loads(detail)) if detail else {}) from None
    assert row is not None
    return row


class PostItem(NamedTuple):
    """One message of :func:`post_many`."""

    room_id: uuid.UUID
    author_id: uuid.UUID
    client_msg_id: str
    body: str
    pace: Pace


async def post_many(conn: Connection, items: Sequence[PostItem]) -> list[Record]:
    """:func:`post` for several messages in one statement (one round trip), each by its own ``chat_post``
    call, in the order given; their rows in that order.

    Any refusal or error fails the whole statement (``asyncpg.PostgresError``; nothing is stored): the
    caller then stores the messages one by one to learn which failed.
    """
    rows = await conn.fetch(
        "SELECT p.* FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::float8[],"
        " $7::int[], $8::bool[]) WITH ORDINALITY AS x(room_id, id, author_id, client_msg_id, body, win, cnt, adm, ord)"
        " CROSS JOIN LATERAL chat_post(x.room_id, x.id, x.author_id, x.client_msg_id, x.body, x.win, x.cnt, x.adm) p"
        " ORDER BY x.ord",
        [i.room_id for i in items],
        [new_id() for _ in items],
        [i.author_id for i in items],
        [i.client_msg_id for i in items],
        [i.body for i in items],
        [i.pace.rate_window_s for i in items],
        [i.pace.rate_count for i in items],
        [i.pace.admin for i in items],
    )
    if len(rows) != len(items):
        raise RuntimeError(f"chat_post answered {len(rows)} rows for {len(items)} messages")
    return list(rows)


async def edit_message(conn: Connection, message_id: uuid.UUID, body: str) -> Record:
    row: Record | None = await conn.fetchrow(
        "WITH m AS (UPDATE chat_messages SET body = $2, edited_at = now(), rev = rev + 1 WHERE id = $1" + _RETURNING,
        message_id,
        body,
    )
    assert row is not None
    return row


async def tombstone(conn: Connection, message_id: uuid.UUID, by: uuid.UUID) -> Record:
    row: Record | None = await conn.fetchrow(
        "WITH m AS (UPDATE chat_messages SET deleted_at = now(), deleted_by = $2, rev = rev + 1 WHERE id = $1"
        + _RETURNING,
        message_id,
        by,
    )
    assert row is not None
    return row


async def history(
    conn: Connection, room_id: uuid.UUID, before: int | None, after: int | None, limit: int
) -> tuple[list[Record], bool]:
    """Up to ``limit`` messages in ascending seq, and whether more lie beyond the page.

    With ``after`` the page starts right after it (more = newer ones remain); otherwise it is the newest
    ``limit`` messages below ``before`` (more = older ones remain). Each row carries its reaction counts
    (``reactions``, see :data:`_PAGE`).
    """
    if after is not None:
        rows = await conn.fetch(
            _PAGE + " WHERE m.room_id = $1 AND m.seq > $2 AND ($3::bigint IS NULL OR m.seq < $3)"
            " ORDER BY m.seq LIMIT $4",
            room_id,
            after,
            before,
            limit + 1,
        )
        return list(rows[:limit]), len(rows) > limit
    rows = await conn.fetch(
        _PAGE + " WHERE m.room_id = $1 AND ($2::bigint IS NULL OR m.seq < $2) ORDER BY m.seq DESC LIMIT $3",
        room_id,
        before,
        limit + 1,
    )
    return list(reversed(rows[:limit])), len(rows) > limit


async def positions(conn: Connection, room_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The last committed seq of each room (rooms that no longer exist are left out)."""
    rows = await conn.fetch("SELECT id, last_seq FROM rooms WHERE id = ANY($1::uuid[])", list(room_ids))
    return {r["id"]: r["last_seq"] for r in rows}


# --- reactions -----------------------------------------------------------------------------------


async def reactions(conn: Connection, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Reaction counts per message, emoji in order of first use."""
    out: dict[uuid.UUID, dict[str, int]] = {}
    if not message_ids:
        return out
    rows = await conn.fetch(
        "SELECT message_id, emoji, count(*) AS n, min(created_at) AS first FROM chat_reactions"
        " WHERE message_id = ANY($1::uuid[]) GROUP BY message_id, emoji ORDER BY message_id, first, emoji",
        list(message_ids),
    )
    for r in rows:
        out.setdefault(r["message_id"], {})[r["emoji"]] = r["n"]
    return out


async def set_reaction(conn: Connection, message_id: uuid.UUID, user_id: uuid.UUID, emoji: str, on: bool) -> bool:
    """Add or remove one user's reaction; True if that changed anything."""
    if on:
        status = await conn.execute(
            "INSERT INTO chat_reactions (message_id, user_id, emoji) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            message_id,
            user_id,
            emoji,
        )
    else:
        status = await conn.execute(
            "DELETE FROM chat_reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
            message_id,
            user_id,
            emoji,
        )
    return not str(status).endswith(" 0")


async def bump_rev(conn: Connection, message_id: uuid.UUID) -> int:
    rev: int = await conn.fetchval("UPDATE chat_messages SET rev = rev + 1 WHERE id = $1 RETURNING rev", message_id)
    return rev


# --- mentions ------------------------------------------------------------------------------------


async def mentioned_members(
    conn: Connection, room_id: uuid.UUID, names: Sequence[str], exclude: uuid.UUID
) -> list[uuid.UUID]:
    """Members (not banned, not ``exclude``) whose display name matches a mention key (see chat_core)."""
    if not names:
        return []
    rows = await conn.fetch(
        "SELECT rm.user_id FROM room_members rm JOIN users u ON u.id = rm.user_id"
        " WHERE rm.room_id = $1 AND rm.banned_at IS NULL AND rm.user_id <> $3"
        " AND lower(regexp_replace(u.display_name, '\\s', '', 'g')) = ANY($2::text[])"
        " ORDER BY rm.user_id",
        room_id,
        list(names),
        exclude,
    )
    return [r["user_id"] for r in rows]


# --- moderation ----------------------------------------------------------------------------------


async def target(conn: Connection, room_id: uuid.UUID, user_id: uuid.UUID) -> Record | None:
    """A user and their membership of the room (role/muted_until/banned_at are NULL for non-members)."""
    row: Record | None = await conn.fetchrow(
        "SELECT u.id, u.display_name, u.role AS platform_role, rm.role, rm.muted_until, rm.banned_at"
        " FROM users u LEFT JOIN room_members rm ON rm.room_id = $1 AND rm.user_id = u.id WHERE u.id = $2",
        room_id,
        user_id,
    )
    return row


async def set_muted_until(conn: Connection, room_id: uuid.UUID, user_id: uuid.UUID, seconds: int) -> datetime | None:
    until: datetime | None = await conn.fetchval(
        "UPDATE room_members SET muted_until = now() + $3::interval WHERE room_id = $1 AND user_id = $2"
        " RETURNING muted_until",
        room_id,
        user_id,
        timedelta(seconds=seconds) if seconds > 0 else None,
    )
    return until


async def remove_member(conn: Connection, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2", room_id, user_id)


async def ban(conn: Connection, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Mark the user banned, as a plain member (a banned moderator loses the role); non-members too."""
    await conn.execute(
        "INSERT INTO room_members (room_id, user_id, role, banned_at) VALUES ($1, $2, 'member', now())"
        " ON CONFLICT (room_id, user_id) DO UPDATE SET role = 'member', banned_at = now(), muted_until = NULL",
        room_id,
        user_id,
    )


async def set_slow_mode(conn: Connection, room_id: uuid.UUID, seconds: int) -> None:
    await conn.execute("UPDATE rooms SET slow_mode_s = $2 WHERE id = $1", room_id, seconds)


# --- live connections ----------------------------------------------------------------------------


# --- read markers --------------------------------------------------------------------------------

UNREAD_CAP = 1000


async def mark_read(conn: Connection, room_id: uuid.UUID, user_id: uuid.UUID, seq: int) -> Record | None:
    """Move the member's read marker forward to ``seq`` (never back, never past the room's last seq).

    The marker and the unread count after it (others' messages, not deleted, counted up to
    :data:`UNREAD_CAP`); None if the user is not an active member.
    """
    row: Record | None = await conn.fetchrow(
        f"""WITH m AS (
                UPDATE room_members m SET last_read_seq = greatest(m.last_read_seq, least($3, r.last_seq))
                FROM rooms r WHERE r.id = m.room_id AND m.room_id = $1 AND m.user_id = $2 AND m.banned_at IS NULL
                RETURNING m.last_read_seq
            )
            SELECT m.last_read_seq, (SELECT count(*) FROM (SELECT 1 FROM chat_messages x
                WHERE x.room_id = $1 AND x.seq > m.last_read_seq AND x.author_id <> $2 AND x.deleted_at IS NULL
                LIMIT {UNREAD_CAP}) u) AS unread
            FROM m""",
        room_id,
        user_id,
        seq,
    )
    return row
