"""The caller's notifications: listing (newest first), unread counts and marking as read.

Services elsewhere create notifications with :func:`core_api.context.notify`; this module only reads
them and marks them read. A user sees only their own: anyone else's notification is not found. Marking
publishes a ``notifications_read`` event to ``user:{id}`` after commit, so the user's other open
clients can update their unread badge.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core_api.context import Core, Page, PageQuery, Tx, core_of, decode_cursor, page_of
from core_api.db import Connection, Record
from core_api.errors import not_found
from core_api.http import Api, Call, Principal

api = Api()
TAG = "notifications"
_COLUMNS = "id, kind, payload, created_at, read_at"

# --- schemas -------------------------------------------------------------------------------------


class NotificationOut(BaseModel):
    id: uuid.UUID
    kind: str = Field(description="What happened, e.g. `community_added`, `role_changed`.")
    payload: dict[str, Any] = Field(description="Details; their shape depends on `kind`.")
    created_at: datetime
    read_at: datetime | None


class NotificationQuery(PageQuery):
    unread: bool | None = Field(None, description="`true`: only unread; `false`: only already read; omitted: all.")


class MarkedCount(BaseModel):
    marked: int = Field(description="How many notifications were unread and are now read.")


class UnreadCount(BaseModel):
    unread: int


# --- service -------------------------------------------------------------------------------------


def notification_out(r: Record) -> NotificationOut:
    return NotificationOut(**dict(r))


async def list_notifications(core: Core, user: Principal, query: NotificationQuery) -> Page[NotificationOut]:
    at, ident = decode_cursor(query.cursor)
    rows = await core.pool.fetch(
        f"""SELECT {_COLUMNS} FROM notifications
            WHERE user_id = $1
              AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
              AND ($5::boolean IS NULL OR (read_at IS NULL) = $5)
            ORDER BY created_at DESC, id DESC LIMIT $4""",
        user.id,
        at,
        ident,
        query.limit + 1,
        query.unread,
    )
    return page_of(rows, query.limit, notification_out)


async def count_unread(conn: Connection, user_id: uuid.UUID) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL", user_id
    )
    return count


def _announce_read(tx: Tx, user_id: uuid.UUID, notification_id: uuid.UUID | None, unread: int) -> None:
    """Tell the user's clients; ``notification_id`` None means every notification was marked."""
    tx.publish(
        f"user:{user_id}",
        {
            "type": "notifications_read",
            "notification_id": str(notification_id) if notification_id else None,
            "unread": unread,
        },
    )


async def mark_read(core: Core, user: Principal, notification_id: uuid.UUID) -> Record:
    """Mark one of the caller's notifications read (again is fine: the first read time is kept)."""
    async with core.transaction() as tx:
        was_unread = await tx.conn.fetchval(
            "SELECT read_at IS NULL FROM notifications WHERE id = $1 AND user_id = $2 FOR UPDATE",
            notification_id,
            user.id,
        )
        if was_unread is None:
            raise not_found("notification")
        row = await tx.conn.fetchrow(
            f"UPDATE notifications SET read_at = coalesce(read_at, now()) WHERE id = $1 RETURNING {_COLUMNS}",
            notification_id,
        )
        assert row is not None
        if was_unread:
            _announce_read(tx, user.id, notification_id, await count_unread(tx.conn, user.id))
        return row


async def mark_all_read(core: Core, user: Principal) -> int:
    async with core.transaction() as tx:
        marked: int = await tx.conn.fetchval(
            """WITH marked AS (
                   UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL RETURNING 1)
               SELECT count(*) FROM marked""",
            user.id,
        )
        if marked:
            _announce_read(tx, user.id, None, 0)
    return marked


# --- handlers ------------------------------------------------------------------------------------


@api.route(
    "GET",
    "/me/notifications",
    summary="The caller's notifications, newest first",
    tag=TAG,
    query=NotificationQuery,
    response=Page[NotificationOut],
)
async def get_notifications(call: Call) -> Page[NotificationOut]:
    return await list_notifications(core_of(call), call.me, call.query)


@api.route(
    "GET",
    "/me/notifications/unread-count",
    summary="How many of the caller's notifications are unread",
    tag=TAG,
    response=UnreadCount,
)
async def get_notifications_unread_count(call: Call) -> UnreadCount:
    async with core_of(call).pool.acquire() as conn:
        return UnreadCount(unread=await count_unread(conn, call.me.id))


@api.route(
    "POST",
    "/me/notifications/read-all",
    summary="Mark all of the caller's notifications read",
    tag=TAG,
    response=MarkedCount,
)
async def post_notifications_read_all(call: Call) -> MarkedCount:
    return MarkedCount(marked=await mark_all_read(core_of(call), call.me))


@api.route(
    "POST",
    "/notifications/{notification_id}/read",
    summary="Mark one of the caller's notifications read",
    tag=TAG,
    response=NotificationOut,
)
async def post_notification_read(call: Call) -> NotificationOut:
    return notification_out(await mark_read(core_of(call), call.me, call.params["notification_id"]))
