"""Chat moderation: mute, kick, ban and slow mode.

Hosts and moderators moderate; a moderator acts only on members, a host on moderators and members,
platform admins on anyone (:func:`rooms.chat_service.require_outranks`). Nobody moderates themselves.
Every action is written to the audit log in its transaction and, after the commit, announced to the
room as ``chat:moderation {room_id, action, user_id, by, ...}``.

**Kick and ban across nodes.** A kick deletes the membership (the user may join again; a private room
needs a new invitation); a ban keeps the row with ``banned_at`` set, so joining is refused. Either way
the user's connections must leave the Socket.IO room ``room:<id>`` on whichever node holds them:
:func:`rooms.live.drop_user` finds them through room presence (which records every joined connection on
every node), takes them out of the Socket.IO room and announces ``left``. Redis delivers one publisher's
messages in order, so the ``chat:moderation`` broadcast sent afterwards no longer reaches the evicted
connections. The user is told first with ``room:kicked {room_id, reason: "kick" | "ban"}`` in their
personal room ``user:<id>``. Then (``rights:<user>``) every node re-checks the user's other open
connections: an editor of one of the room's workspaces is closed with 4403.
"""

from __future__ import annotations

import uuid
from typing import Any

from core_api.context import audit, publish_rights_changed
from core_api.db import Connection, Record
from core_api.errors import invalid, not_found
from core_api.events import EventCall
from rooms import chat_store as store
from rooms.access import require_member, require_open, require_room_role, socket_room
from rooms.chat_schemas import BanIn, KickIn, MemberRef, MuteIn, SlowModeIn
from rooms.chat_service import require_outranks, user_ref
from rooms.live import drop_user


async def _target(conn: Connection, call: EventCall, data: MemberRef, *, member_only: bool) -> Record:
    if data.user_id == call.user.id:
        raise invalid("user_id: you cannot moderate yourself")
    row = await store.target(conn, data.room_id, data.user_id)
    if row is None:
        raise not_found("user")
    if member_only and (row["role"] is None or row["banned_at"] is not None):
        raise not_found("member")
    return row


async def _announce(call: EventCall, room_id: uuid.UUID, action: str, user_id: uuid.UUID | None, **extra: Any) -> None:
    event = {
        "room_id": str(room_id),
        "action": action,
        "user_id": str(user_id) if user_id is not None else None,
        "by": user_ref(call.user),
        **extra,
    }
    await call.transport.emit("chat:moderation", event, to=socket_room(room_id))


async def evict(call: EventCall, room_id: uuid.UUID, user_id: uuid.UUID, reason: str) -> None:
    """Tell the user and take each of their connections, on any node, out of the room's Socket.IO room;
    then every node re-checks the user's other open connections (the room's workspaces: closed with 4403).
    """
    await call.transport.emit("room:kicked", {"room_id": str(room_id), "reason": reason}, to=f"user:{user_id}")
    await drop_user(call, room_id, user_id)
    await publish_rights_changed(call.core, user_id)


async def mute(call: EventCall, data: MuteIn) -> dict[str, Any]:
    """Mute a member for ``seconds`` (0 lifts the mute): their sends are refused until then."""
    async with call.core.transaction() as tx:
        room, member = await require_member(tx.conn, call.user, data.room_id)
        require_open(room)
        target = await _target(tx.conn, call, data, member_only=True)
        require_outranks(call.user, member, target, "mute")
        until = await store.set_muted_until(tx.conn, data.room_id, data.user_id, data.seconds)
        action = "mute" if data.seconds > 0 else "unmute"
        await audit(
            tx, call.user.id, f"chat.{action}", "room", data.room_id, user_id=str(data.user_id), seconds=data.seconds
        )
    muted_until = until.isoformat() if until is not None else None
    await _announce(call, data.room_id, action, data.user_id, seconds=data.seconds, muted_until=muted_until)
    return {"muted_until": muted_until}


async def kick(call: EventCall, data: KickIn) -> None:
    """Remove a member from the room now; they may join again."""
    async with call.core.transaction() as tx:
        room, member = await require_member(tx.conn, call.user, data.room_id)
        require_open(room)
        target = await _target(tx.conn, call, data, member_only=True)
        require_outranks(call.user, member, target, "kick")
        await store.remove_member(tx.conn, data.room_id, data.user_id)
        await audit(tx, call.user.id, "chat.kick", "room", data.room_id, user_id=str(data.user_id))
    await evict(call, data.room_id, data.user_id, "kick")
    await _announce(call, data.room_id, "kick", data.user_id)


async def ban(call: EventCall, data: BanIn) -> None:
    """Ban a user (member or not: they cannot join until unbanned) and remove them now; or lift a ban.

    Lifting a ban (a no-op when there is none) deletes the membership row, so the user may join again
    like anyone else. Also allowed in an archived room.
    """
    async with call.core.transaction() as tx:
        _, member = await require_member(tx.conn, call.user, data.room_id)
        target = await _target(tx.conn, call, data, member_only=False)
        require_outranks(call.user, member, target, "ban" if data.on else "unban")
        if not data.on and target["banned_at"] is None:
            return
        if data.on:
            await store.ban(tx.conn, data.room_id, data.user_id)
        else:
            await store.remove_member(tx.conn, data.room_id, data.user_id)
        action = "ban" if data.on else "unban"
        await audit(tx, call.user.id, f"chat.{action}", "room", data.room_id, user_id=str(data.user_id))
    if data.on:
        await evict(call, data.room_id, data.user_id, "ban")
    await _announce(call, data.room_id, action, data.user_id)


async def slow_mode(call: EventCall, data: SlowModeIn) -> None:
    """Let members below moderator send at most one message per ``seconds`` in the room (0: off)."""
    async with call.core.transaction() as tx:
        room, member = await require_member(tx.conn, call.user, data.room_id)
        require_open(room)
        require_room_role(member, call.user, "moderator")
        await store.set_slow_mode(tx.conn, data.room_id, data.seconds)
        await audit(tx, call.user.id, "chat.slow_mode", "room", data.room_id, seconds=data.seconds)
    await _announce(call, data.room_id, "slow_mode", None, seconds=data.seconds)
