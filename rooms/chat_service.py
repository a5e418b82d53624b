"""Chat use cases: send, history, edit, delete, react, typing.

Each one checks access with :mod:`rooms.access`, changes state in one transaction, and only after the
commit emits to the room's Socket.IO room ``room:<id>`` (every node, through the transport). The rules
without I/O live in :mod:`rooms.chat_core`, the SQL in :mod:`rooms.chat_store`.

**Ordering.** ``chat:send`` claims the room's next ``seq`` by incrementing ``rooms.last_seq`` in the same
transaction as the insert: the row lock queues concurrent senders (on any node) and a rollback gives
the number back, so ``seq`` is 1, 2, 3, ... per room with no gaps or repeats. The database clock read
under that lock is the message's ``created_at`` and the "now" of the rate limit and slow mode. Concurrent
sends emit after their own commits, in any order; every node's fan-out puts each room's ``chat:message``
back in ``seq`` order (:mod:`realtime.ordered`, fed from here by :mod:`rooms.chat_order`).

**Idempotence.** A sender names each message with a ``client_msg_id``; sending the same one again in the
room returns the first message (same seq, nothing broadcast), even while muted or rate limited.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from core_api.context import audit
from core_api.db import Connection, Record
from core_api.errors import AppError, conflict, forbidden, not_found
from core_api.events import EventCall
from core_api.http import Principal
from core_api.settings import Settings
from rooms import chat_core as rules
from rooms import chat_store as store
from rooms.access import ROOM_RANK, require_member, require_open, require_room_role, socket_room
from rooms.chat_schemas import DeleteIn, EditIn, HistoryIn, ReactIn, ReadIn, SendIn, TypingIn
from rooms.chat_writer import post_now, writer_of
from rooms.dms import blocked_error, is_block_mute

MAX_EMOJI_PER_MESSAGE = 32
MEMBER_CACHE_S = 30.0
"""How long a connection's typing indicator trusts an earlier membership check of the room."""
_TYPING = "chat.typing"
_MEMBER_OK = "chat.member_ok"
_DM_PARTICIPANTS = "chat.dm_participants"
NOT_DM = "chat.not_dm"
"""Session key of the node's rooms known not to be direct-message conversations (a ``dict`` used as a set,
shared by every connection: a room's kind never changes, so once one join or send learnt it, no later send on
this node reads it again before acking)."""
NOT_DM_MAX = 100_000


def user_ref(user: Principal) -> dict[str, str]:
    return {"id": str(user.id), "display_name": user.display_name}


def require_outranks(user: Principal, member: Record, target: Record, doing: str) -> None:
    """Moderation rights over ``target`` (a :func:`rooms.chat_store.target` row): the caller is a moderator
    or host ranked above the target's room role (admins may act on anyone; only admins on admins)."""
    require_room_role(member, user, "moderator")
    target_rank = ROOM_RANK[target["role"]] if target["role"] is not None else ROOM_RANK["member"]
    if not rules.may_moderate(
        ROOM_RANK[member["role"]], user.is_admin, target_rank, target["platform_role"] == "admin"
    ):
        raise forbidden(f"a moderator may only {doing} of someone ranked below them")


async def views(conn: Connection, rows: list[Record]) -> list[dict[str, Any]]:
    if rows and "reactions" in rows[0]:  # read with them (a page of history)
        return [rules.message_view(r, r["reactions"]) for r in rows]
    counts = await store.reactions(conn, [r["id"] for r in rows if r["deleted_at"] is None])
    return [rules.message_view(r, counts.get(r["id"])) for r in rows]


async def recent_messages(
    conn: Connection, room_id: uuid.UUID, limit: int = 50, *, before_seq: int | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` messages (below ``before_seq``) in ascending seq, as ``chat:message`` carries
    them (for ``room:join``)."""
    rows, _ = await store.history(conn, room_id, before_seq, None, limit)
    return await views(conn, rows)


# --- send ----------------------------------------------------------------------------------------


async def send(call: EventCall, data: SendIn) -> dict[str, Any]:
    """Store a message and broadcast ``chat:message``; the stored message (or the earlier one).

    Membership, the seq, the pace checks and the insert are one statement (``chat_store.post``). The node's
    :class:`~rooms.chat_writer.ChatWriter` commits it together with the other sends of the same few
    milliseconds (group commit; without a writer it commits alone, in that same round trip); either way this
    answers, and broadcasts, only once the message is committed. A refusal costs more round trips, to tell
    the sender exactly why. A message with @mentions is stored with its mention notifications.
    """
    client_msg_id = rules.check_token(data.client_msg_id, "client_msg_id")
    settings = call.core.settings
    body = rules.clean_body(data.body, settings.chat_max_body)
    user = call.user
    pace = store.Pace(float(settings.chat_rate_window_s), settings.chat_rate_count, user.is_admin)
    writer = writer_of(call.session)
    try:
        if writer is not None:
            row = await writer.post(data.room_id, user, client_msg_id, body, pace)
        else:
            row = await post_now(call.core, data.room_id, user, client_msg_id, body, pace)
    except store.PostRefused as refused:
        async with call.core.pool.acquire() as conn:
            if refused.reason in ("not_member", "no_room"):
                # Which error the sender may see: not_found, not a member, banned, archived.
                room, _ = await require_member(conn, user, data.room_id)
                require_open(room)
                raise not_found("room") from None  # deleted while we looked
            if refused.reason != "already_sent":
                raise _refusal(refused, settings) from None
            earlier = await store.message_by_client_id(conn, data.room_id, user.id, client_msg_id)
            assert earlier is not None
            return (await views(conn, [earlier]))[0]
    if not row["fresh"]:  # a resend: the earlier message, as it is now (edits, reactions)
        async with call.core.pool.acquire() as conn:
            return (await views(conn, [row]))[0]
    message = rules.message_view(row)
    await call.transport.emit("chat:message", message, to=socket_room(data.room_id))
    participants = await _dm_participants(call, data.room_id)
    if participants:
        # Direct messages reach their participants wherever they are (the Messages list), not only in the room.
        event = {"room_id": str(data.room_id), "message": message}
        await call.transport.emit("dm:message", event, to=[f"user:{p}" for p in participants])
    return message


def note_not_dm(session: MutableMapping[str, Any], room_id: uuid.UUID) -> None:
    """Remember, for every connection of this node, that the room is not a direct-message conversation."""
    not_dm: dict[uuid.UUID, None] | None = session.get(NOT_DM)
    if not_dm is None or room_id in not_dm:
        return
    if len(not_dm) >= NOT_DM_MAX:
        not_dm.clear()
    not_dm[room_id] = None


async def _dm_participants(call: EventCall, room_id: uuid.UUID) -> tuple[str, ...]:
    """The participants of a direct-message room, () for any other room. A conversation's kind and
    participants never change, so each connection reads them once per room, and a room known on this node
    not to be one (:data:`NOT_DM`: a join read its kind) is not read at all."""
    not_dm: dict[uuid.UUID, None] | None = call.session.get(NOT_DM)
    if not_dm is not None and room_id in not_dm:
        return ()
    known: dict[str, tuple[str, ...]] = call.session.setdefault(_DM_PARTICIPANTS, {})
    key = str(room_id)
    if key not in known:
        if len(known) >= 1000:
            known.clear()
        rows = await call.core.pool.fetch(
            "SELECT m.user_id FROM rooms r JOIN room_members m ON m.room_id = r.id"
            " WHERE r.id = $1 AND r.kind = 'dm' ORDER BY m.user_id",
            room_id,
        )
        known[key] = tuple(str(r["user_id"]) for r in rows)
        if not rows:
            note_not_dm(call.session, room_id)
    return known[key]


def _muted(until: datetime | None, now: datetime) -> AppError | None:
    if is_block_mute(until):
        return blocked_error()
    left = rules.muted_for(until, now)
    if left is None or until is None:
        return None
    return forbidden(f"you are muted in this room for {left} more s (until {until.isoformat()})")


def _check_not_muted(member: Record, now: datetime) -> None:
    error = _muted(member["muted_until"], now)
    if error is not None:
        raise error


def _refusal(refused: store.PostRefused, settings: Settings) -> AppError:
    """The error ack for a send ``chat_post`` refused (rate limit, slow mode, mute), with how long to wait."""
    detail = refused.detail
    now: datetime = detail.get("now") or datetime.now(UTC)
    if refused.reason == "muted":
        return _muted(detail["muted_until"], now) or forbidden("you are muted in this room")
    if refused.reason == "slow":
        slow_s = int(detail["slow_mode_s"])
        wait = rules.slow_mode_retry_after(detail["last"], now, slow_s) or 1
        return rules.rate_limited(f"slow mode allows one message per {slow_s} s", wait)
    # "rate": the database counted the sender's limit reached; the rule says how long to wait.
    window_s, limit = float(settings.chat_rate_window_s), settings.chat_rate_count
    wait = rules.rate_retry_after(detail.get("recent") or [], now, limit, window_s) or 1
    return rules.rate_limited("you are sending messages too fast", wait)


# --- history -------------------------------------------------------------------------------------


async def history(call: EventCall, data: HistoryIn) -> dict[str, Any]:
    """A page of messages in ascending seq and ``has_more`` (see :func:`rooms.chat_store.history`)."""
    async with call.core.pool.acquire() as conn:
        await require_member(conn, call.user, data.room_id)
        rows, more = await store.history(conn, data.room_id, data.before_seq, data.after_seq, data.limit)
        return {"messages": await views(conn, rows), "has_more": more}


# --- read markers --------------------------------------------------------------------------------


async def read(call: EventCall, data: ReadIn) -> dict[str, Any]:
    """Move the caller's read marker of a room forward to ``data.seq``; the marker and the unread count.

    The caller's other connections hear ``chat:read {room_id, last_read_seq, unread}``, so every tab
    shows the same count.
    """
    async with call.core.pool.acquire() as conn:
        row = await store.mark_read(conn, data.room_id, call.user.id, data.seq)
        if row is None:
            await require_member(conn, call.user, data.room_id)
            raise not_found("room")  # deleted while we looked
    out = {"room_id": str(data.room_id), "last_read_seq": row["last_read_seq"], "unread": row["unread"]}
    await call.transport.emit("chat:read", out, to=f"user:{call.user.id}", skip_sid=call.sid)
    return {"last_read_seq": row["last_read_seq"], "unread": row["unread"]}


# --- edit, delete, react -------------------------------------------------------------------------


async def edit(call: EventCall, data: EditIn) -> dict[str, Any]:
    """Change one's own message (not a deleted one); broadcast ``chat:updated``. Mentions are not re-sent."""
    body = rules.clean_body(data.body, call.core.settings.chat_max_body)
    async with call.core.transaction() as tx:
        room, _ = await require_member(tx.conn, call.user, data.room_id)
        require_open(room)
        row = await store.message(tx.conn, data.room_id, data.message_id, lock=True)
        if row is None:
            raise not_found("message")
        if row["author_id"] != call.user.id:
            raise forbidden("only the author may edit a message")
        if row["deleted_at"] is not None:
            raise conflict("the message was deleted")
        if row["body"] == body:
            return (await views(tx.conn, [row]))[0]
        message = (await views(tx.conn, [await store.edit_message(tx.conn, row["id"], body)]))[0]
    await call.transport.emit("chat:updated", {"message": message}, to=socket_room(data.room_id))
    return message


async def delete(call: EventCall, data: DeleteIn) -> dict[str, Any]:
    """Tombstone a message: its author, or a moderator or host ranked above the author, may.

    Deleting someone else's message is a moderation action (audited, ``chat:moderation`` broadcast).
    Allowed in archived rooms too; deleting a tombstone again changes nothing.
    """
    user = call.user
    async with call.core.transaction() as tx:
        _, member = await require_member(tx.conn, user, data.room_id)
        row = await store.message(tx.conn, data.room_id, data.message_id, lock=True)
        if row is None:
            raise not_found("message")
        if row["deleted_at"] is not None:
            return rules.message_view(row)
        own = row["author_id"] == user.id
        if not own:
            author = await store.target(tx.conn, data.room_id, row["author_id"])
            assert author is not None
            require_outranks(user, member, author, "delete this message")
            await audit(
                tx,
                user.id,
                "chat.delete_message",
                "room",
                data.room_id,
                message_id=str(row["id"]),
                user_id=str(row["author_id"]),
            )
        message = rules.message_view(await store.tombstone(tx.conn, row["id"], user.id))
    await call.transport.emit("chat:updated", {"message": message}, to=socket_room(data.room_id))
    if not own:
        await call.transport.emit(
            "chat:moderation",
            {
                "room_id": str(data.room_id),
                "action": "delete_message",
                "user_id": str(row["author_id"]),
                "by": user_ref(user),
                "message_id": str(row["id"]),
            },
            to=socket_room(data.room_id),
        )
    return message


async def react(call: EventCall, data: ReactIn) -> dict[str, Any]:
    """Toggle the caller's ``emoji`` on a message; broadcast ``chat:reactions`` if that changed anything."""
    emoji = rules.check_token(data.emoji, "emoji")
    async with call.core.transaction() as tx:
        room, _ = await require_member(tx.conn, call.user, data.room_id)
        require_open(room)
        # Locking the message orders concurrent reactions, so the counts each one reports are current.
        row = await store.message(tx.conn, data.room_id, data.message_id, lock=True)
        if row is None:
            raise not_found("message")
        if row["deleted_at"] is not None:
            raise conflict("the message was deleted")
        counts = (await store.reactions(tx.conn, [row["id"]])).get(row["id"], {})
        if data.on and emoji not in counts and len(counts) >= MAX_EMOJI_PER_MESSAGE:
            raise conflict(f"a message takes at most {MAX_EMOJI_PER_MESSAGE} different reactions")
        changed = await store.set_reaction(tx.conn, row["id"], call.user.id, emoji, data.on)
        rev = row["rev"]
        if changed:
            rev = await store.bump_rev(tx.conn, row["id"])
            counts = (await store.reactions(tx.conn, [row["id"]])).get(row["id"], {})
    event = {"room_id": str(data.room_id), "message_id": str(row["id"]), "reactions": counts, "rev": rev}
    if changed:
        await call.transport.emit("chat:reactions", event, to=socket_room(data.room_id))
    return {"reactions": counts, "rev": rev}


# --- typing --------------------------------------------------------------------------------------


async def typing(call: EventCall, data: TypingIn) -> None:
    """Tell the room's other connections that the caller is (not) typing; nothing is stored.

    The connection must sit in the room's Socket.IO room (a kick takes it out at once). Membership and
    mute are read from the database at most every :data:`MEMBER_CACHE_S` per connection and room.
    """
    key = str(data.room_id)
    if socket_room(key) not in call.transport.rooms_of(call.sid):
        raise forbidden("join the room first")
    now = time.monotonic()
    checked: dict[str, float] = call.session.setdefault(_MEMBER_OK, {})
    if now - checked.get(key, float("-inf")) >= MEMBER_CACHE_S:
        async with call.core.pool.acquire() as conn:
            _, member = await require_member(conn, call.user, data.room_id)
        _check_not_muted(member, datetime.now(UTC))
        checked[key] = now
    marks: dict[str, rules.TypingMark] = call.session.setdefault(_TYPING, {})
    if not rules.forward_typing(marks.get(key), data.typing, now):
        return
    marks[key] = rules.TypingMark(data.typing, now)
    event = {"room_id": key, "user": user_ref(call.user), "typing": data.typing}
    await call.transport.emit("chat:typing", event, to=socket_room(key), skip_sid=call.sid)
