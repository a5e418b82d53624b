"""Being in a room over Socket.IO: join, leave, disconnect, and the ``room:presence`` announcements.

A connection that joins ``room:<id>`` enters the Socket.IO room of that name (so room events reach it
on any node) and the room's :class:`~rooms.presence.Presence`. Presence is per user: the room hears
``joined`` when a user's first connection enters and ``left`` when their last one leaves, so a second
browser tab changes nothing for the others. Joining also makes the user a member of the room (if the
access rules let them see it), so a public or community room needs no invitation.

The joined rooms of a connection are kept in its session under :data:`JOINED`; a disconnect leaves all
of them.

**Large rooms.** Announcing every arrival to everyone present makes presence traffic grow with the square
of the room: a thousand people arriving for a live session would mean a million ``room:presence``
deliveries. Once a room holds more than ``STUDYHALL_PRESENCE_BATCH_ABOVE`` users (as this node last saw
it), its changes are collected by the :class:`Announcer` and sent every ``STUDYHALL_PRESENCE_BATCH_S``
as one ``room:presence_batch {room_id, joined: [user], left: [user], rev}``, each user with the latest of
their changes in that interval. The ``room:join`` answer lists at most ``STUDYHALL_PRESENCE_LIST_MAX`` users
(by name) and always says ``member_count``.

**Revisions.** Each change carries the room's presence revision it made (``rev``, on the event and on
each user of a batch), and the ``room:join`` answer says which revision its list is (``presence_rev``).
Announcements reach a client by several paths (this node, another node through Redis, a batch), so one
may arrive before the join's answer whose list was read earlier, or after a later change of another user;
a client applies a change only if it is newer than the list and than the last change it applied for that
user (``docs/rooms-and-chat.md``).

**Chat on joining.** The connection enters the room through :meth:`Transport.enter_room_at`, which says up
to which ``seq`` this node has already delivered the room's chat: the answer's ``messages`` end there and
every later message reaches the connection live, in order (see :mod:`realtime.ordered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any, cast

from core_api.errors import AppError, ErrorCode, forbidden, invalid
from core_api.events import Connection, EventCall, Transport
from core_api.http import Principal
from rooms import chat_store
from rooms.access import require_member, require_open, socket_room, visible_room
from rooms.chat_service import note_not_dm, recent_messages, views
from rooms.presence import Presence, PresenceChange, PresentUser
from rooms.schemas import PresenceEvent, PresenceState, UserRef
from rooms.service import room_view, visible_room_view

log = logging.getLogger(__name__)

HISTORY_ON_JOIN = 50
PRESENCE = "rooms.presence"
"""Session key under which the server hands every connection the app's :class:`Presence`."""
ANNOUNCER = "rooms.announcer"
JOIN_GATE = "rooms.join_gate"
"""The node's joins at once (an ``asyncio.Semaphore`` of ``STUDYHALL_ROOM_JOINS_AT_ONCE``): when a node dies and
its clients all rejoin here, their joins queue for the gate instead of taking every turn of the event loop, so
the chat of those already here keeps flowing while the storm is worked off."""
"""Session key of the app's :class:`Announcer`."""
JOINED = "rooms.joined"
"""Session key: the ids (text) of the rooms this connection has joined."""
JOIN_HOOKS = "rooms.join_hooks"
"""Session key: ``async (call, room) -> None`` callables run after a connection joined a room (other
packages register them through the server's services: watch parties send a joiner the player state)."""
_CLOSED = "rooms.closed"
_NAME = "rooms.display_name"
"""Session key: the display name the rooms this connection joined last heard for its user."""
RENAMED_EVENT = "room:renamed"
"""s→c ``{room_id, user: {id, display_name}}``: someone present in the room changed their display name
(``PATCH /me``); clients show the new name for that user id from now on."""


def presence_of(session: Mapping[str, Any]) -> Presence:
    presence = session.get(PRESENCE)
    if presence is None:
        raise RuntimeError("this server has no room presence (realtime.app provides it)")
    return cast(Presence, presence)


def joined_rooms(session: MutableMapping[str, Any]) -> set[str]:
    rooms: set[str] = session.setdefault(JOINED, set())
    return rooms


def present_user(user: Principal) -> PresentUser:
    return PresentUser(id=str(user.id), display_name=user.display_name)


async def announce(
    transport: Transport,
    room_id: str,
    user: PresentUser,
    state: PresenceState,
    rev: int,
    *,
    skip_sid: str | None = None,
) -> None:
    event = PresenceEvent(room_id=room_id, user=UserRef(**user.to_json()), state=state, rev=rev)
    await transport.emit("room:presence", event.model_dump(), to=socket_room(room_id), skip_sid=skip_sid)


class Announcer:
    """Sends presence changes: one by one in ordinary rooms, coalesced per interval in large ones."""

    def __init__(self, transport: Transport, batch_above: int, interval_s: float) -> None:
        self.transport = transport
        self.batch_above = batch_above
        self.interval_s = interval_s
        self.sizes: dict[str, int] = {}
        self.pending: dict[str, dict[str, tuple[PresentUser, PresenceState, int]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    async def change(
        self,
        room_id: str,
        user: PresentUser,
        state: PresenceState,
        rev: int,
        *,
        size: int | None = None,
        skip_sid: str | None = None,
    ) -> None:
        """Announce ``user`` joining or leaving at revision ``rev``; ``size`` is the room's head count when
        the caller knows it."""
        if size is not None:
            self.sizes[room_id] = size
        elif state == "left" and room_id in self.sizes:
            self.sizes[room_id] = max(0, self.sizes[room_id] - 1)
        if room_id not in self.pending and self.sizes.get(room_id, 0) <= self.batch_above:
            await announce(self.transport, room_id, user, state, rev, skip_sid=skip_sid)
            if self.sizes.get(room_id) == 0:
                del self.sizes[room_id]
            return
        waiting = self.pending.setdefault(room_id, {})
        earlier = waiting.get(user.id)
        # Only the user's latest change goes out. One who came and went within the interval is still
        # announced as gone: a client may have listed them from a join answer read in between.
        if earlier is None or earlier[2] < rev:
            waiting[user.id] = (user, state, rev)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self._flush_soon)

    def _flush_soon(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        """Send every room's waiting changes as one ``room:presence_batch``."""
        pending, self.pending = self.pending, {}
        for room_id, changes in pending.items():
            if not changes:
                continue
            batch = {
                "room_id": room_id,
                "joined": [{**u.to_json(), "rev": rev} for u, state, rev in changes.values() if state == "joined"],
                "left": [{**u.to_json(), "rev": rev} for u, state, rev in changes.values() if state == "left"],
                "rev": max(rev for _, _, rev in changes.values()),
            }
            try:
                await self.transport.emit("room:presence_batch", batch, to=socket_room(room_id))
            except Exception:
                log.exception("could not send the presence of room %s", room_id)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.flush()
        for task in list(self._flushing):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def announcer_of(session: Mapping[str, Any]) -> Announcer:
    announcer = session.get(ANNOUNCER)
    if announcer is None:
        raise RuntimeError("this server has no presence announcer (realtime.app provides it)")
    return cast(Announcer, announcer)


async def announce_changes(announcer: Announcer, changes: list[PresenceChange]) -> None:
    """Tell rooms about users that upkeep found appearing or vanishing (a dead node's users)."""
    for change in changes:
        await announcer.change(change.room_id, change.user, change.state, change.rev)


_TURNS = "room_turns"


def _turn(session: MutableMapping[str, Any], key: str) -> asyncio.Lock:
    """One connection's joins and leaves of one room, one at a time and in the order they came.

    python-socketio runs each event in a task of its own, so a ``room:leave`` and the ``room:join`` right after
    it (a screen closed and opened again: the browser's back button) would otherwise interleave, and the leave,
    finishing last, would take the connection out of the room it had just joined (out of the Socket.IO room and
    the people present, with the screen showing the room). Events start in the order they arrived, and an
    ``asyncio.Lock`` is taken in the order asked for, so taking it first thing keeps that order."""
    turns: dict[str, asyncio.Lock] = session.setdefault(_TURNS, {})
    lock = turns.get(key)
    if lock is None:
        lock = turns[key] = asyncio.Lock()
    return lock


def _done_with_turn(session: MutableMapping[str, Any], key: str, lock: asyncio.Lock) -> None:
    """Forget a room's lock once nobody holds or waits for it (a connection that joins and leaves many rooms
    keeps no lock per room)."""
    turns: dict[str, asyncio.Lock] = session.get(_TURNS, {})
    if turns.get(key) is lock and not lock.locked():
        del turns[key]


async def join(call: EventCall, room_id: uuid.UUID) -> dict[str, Any]:
    """Join a room: become a member if need be, enter it, announce the user, answer with the room,
    the users present and the last messages.

    Raises ``not_found`` for a room the caller may not see, ``forbidden`` when banned and ``conflict``
    when the room is archived.
    """
    key = str(room_id)
    lock = _turn(call.session, key)
    try:
        async with lock:
            return await _join(call, room_id)
    finally:
        _done_with_turn(call.session, key, lock)


JOIN_MANY_EVENT = "room:join_many"
_JOIN_MANY_TIMES = "rooms.join_many_times"


def _pace_join_many(call: EventCall) -> None:
    """At most ``room_join_many_rate_count`` batches per connection per window (``rate_limited`` past it)."""
    settings = call.core.settings
    now = time.monotonic()
    window = settings.room_join_many_rate_window_s
    times: list[float] = call.session.setdefault(_JOIN_MANY_TIMES, [])
    times[:] = [t for t in times if now - t < window]
    if len(times) >= settings.room_join_many_rate_count:
        wait = max(1, math.ceil(window - (now - times[0])))
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"{JOIN_MANY_EVENT}: at most {settings.room_join_many_rate_count} per {window:g} s on one connection: "
            f"try again in {wait} s (retry_after={wait})",
            {"retry_after_s": wait},
        )
    times.append(now)


async def join_many(call: EventCall, rooms: list[tuple[uuid.UUID, int | None]]) -> list[dict[str, Any]]:
    """Join several rooms in one event (a reconnect rejoins every open room): per room, in the order asked,
    ``{room_id, ok: true, room, members, member_count, presence_rev, messages, has_more}`` or ``{room_id,
    ok: false, error: {code, message}}``.

    A room with an ``after_seq`` gets only the messages after it (at most ``room_join_many_max_messages``,
    ascending; ``has_more`` when more were missed: page with ``chat:history``), up to where its live
    ``chat:message``s start, so a reconnect costs no duplicate history. Without one it gets the last
    messages as ``room:join`` does. Each room is joined as ``room:join`` joins it (same locks, presence
    revisions, order guarantees); a room the caller may not join fails alone with the error ``room:join``
    would give (``not_found`` for one they may not see). A batch longer than ``room_join_many_max_rooms``
    or naming a room twice is refused whole (``invalid_input``), as is one past the per-connection rate.
    """
    settings = call.core.settings
    if len(rooms) > settings.room_join_many_max_rooms:
        raise invalid(
            f"{JOIN_MANY_EVENT}: at most {settings.room_join_many_max_rooms} rooms per call (got {len(rooms)})"
        )
    seen: set[uuid.UUID] = set()
    for room_id, _ in rooms:
        if room_id in seen:
            raise invalid(f"{JOIN_MANY_EVENT}: room {room_id} is listed twice")
        seen.add(room_id)
    _pace_join_many(call)
    out: list[dict[str, Any]] = []
    for room_id, after_seq in rooms:
        key = str(room_id)
        if call.session.get(_CLOSED):
            # The connection went away meanwhile: joining the rest would only leave them again.
            out.append(
                {"room_id": key, "ok": False, "error": {"code": ErrorCode.UNAVAILABLE.value, "message": "disconnected"}}
            )
            continue
        lock = _turn(call.session, key)
        try:
            async with lock:
                joined = await _join(call, room_id, after_seq, settings.room_join_many_max_messages)
            out.append({"room_id": key, "ok": True, **joined})
        except AppError as exc:
            out.append({"room_id": key, "ok": False, "error": {"code": exc.code.value, "message": exc.message}})
        except Exception:
            log.exception("%s: joining room %s failed", JOIN_MANY_EVENT, key)
            error = {"code": ErrorCode.INTERNAL.value, "message": "internal error; it has been logged"}
            out.append({"room_id": key, "ok": False, "error": error})
        finally:
            _done_with_turn(call.session, key, lock)
    return out


async def _join(
    call: EventCall, room_id: uuid.UUID, after_seq: int | None = None, catch_up_max: int = 0
) -> dict[str, Any]:
    """Join one room (the caller holds its turn), in the node's join gate (``STUDYHALL_ROOM_JOINS_AT_ONCE``)."""
    gate: asyncio.Semaphore | None = call.session.get(JOIN_GATE)
    if gate is None:
        return await _join_now(call, room_id, after_seq, catch_up_max)
    async with gate:
        return await _join_now(call, room_id, after_seq, catch_up_max)


async def _join_now(
    call: EventCall, room_id: uuid.UUID, after_seq: int | None = None, catch_up_max: int = 0
) -> dict[str, Any]:
    """Join one room. Without ``after_seq``: the answer of ``room:join``. With it: the same, its ``messages``
    those after ``after_seq`` (at most ``catch_up_max``) and ``has_more``."""
    async with call.core.pool.acquire() as db, contextlib.AsyncExitStack() as tx:
        room, member, view = await visible_room_view(db, call.user, room_id)
        community = room["visibility"] == "community" and room["community_id"] is not None
        read_again = community or member is None
        if read_again:
            # A transaction only when needed: a member rejoining a room outside communities (a reconnect) only
            # reads, each statement as of its own start as in a transaction (read committed), and saves its
            # BEGIN and COMMIT round trips.
            await tx.enter_async_context(db.transaction())
        if community:
            # Leaving (or being removed from) the community locks its row for update and drops the
            # member's rooms in the same transaction: holding it shared, this join either ends before
            # that starts, or reads the membership after it committed (and is refused).
            await db.execute("SELECT 1 FROM communities WHERE id = $1 FOR SHARE", room["community_id"])
            room, member = await visible_room(db, call.user, room_id)
        if member is not None and member["banned_at"] is not None:
            raise forbidden("you are banned from this room")
        require_open(room)
        if room["kind"] != "dm":
            note_not_dm(call.session, room_id)
        if member is None:
            await db.execute(
                "INSERT INTO room_members (room_id, user_id, role)"
                " VALUES ($1, $2, CASE WHEN $3 THEN 'host' ELSE 'member' END) ON CONFLICT DO NOTHING",
                room_id,
                call.user.id,
                room["created_by"] == call.user.id,
            )
        if read_again:  # the membership may differ from the one read first
            view = await room_view(db, call.user, room_id)
        if after_seq is None:
            messages = await recent_messages(db, room_id, HISTORY_ON_JOIN)
        elif after_seq >= room["last_seq"]:
            messages = []  # nothing was committed since: no read (a later message comes live or is read below)
        else:
            rows, _ = await chat_store.history(db, room_id, None, after_seq, catch_up_max)
            messages = await views(db, rows)
        committed = max(room["last_seq"], messages[-1]["seq"] if messages else 0)

    key, me, presence = str(room_id), present_user(call.user), presence_of(call.session)
    # Live chat:message from this node's position on; the history ends at that position.
    # A rejoin may hold more than this node delivered yet (it was on a node ahead of this one): the live
    # messages up to its after_seq are not sent to it again.
    upto = await call.transport.enter_room_at(call.sid, socket_room(key), committed, after_seq)
    joined_rooms(call.session).add(key)
    more: bool | None = None
    if after_seq is None:
        messages = await _history_up_to(call, room_id, messages, upto)
    else:
        messages, more = await _missed_up_to(call, room_id, messages, after_seq, upto, catch_up_max)
    call.session[_NAME] = call.user.display_name
    rev, snapshot = await presence.enter_and_snapshot(key, call.sid, me)
    await _enter_current_name(call, key, me)
    announcer = announcer_of(call.session)
    if call.session.get(_CLOSED):
        # The connection went away while joining, after its disconnect hook had left its rooms.
        gone = await presence.leave(key, call.sid)
        if gone is not None:  # someone may have listed the user meanwhile
            await announcer.change(key, gone.user, "left", gone.rev)
    elif rev is not None:
        await announcer.change(key, me, "joined", rev, size=len(snapshot.users), skip_sid=call.sid)
    for hook in call.session.get(JOIN_HOOKS, ()):
        try:
            await hook(call, view)
        except Exception:
            log.exception("a room:join hook failed for room %s", key)
    answer = {
        "room": view.model_dump(mode="json"),
        "members": [m.to_json() for m in snapshot.users[: call.core.settings.presence_list_max]],
        "member_count": len(snapshot.users),
        "presence_rev": snapshot.rev,
        "messages": messages,
    }
    if more is not None:
        answer["has_more"] = more
    return answer


async def _enter_current_name(call: EventCall, key: str, entered: PresentUser) -> None:
    """The join entered the user with the name its event started with; if the connection's account was read
    again meanwhile with a new name (a rename while joining), the entry gets that one. (A re-read after this
    runs :func:`_tell_rename`, which renames the entries of the rooms joined, this one included.)"""
    now = call.session.get("user")
    if isinstance(now, Principal) and now.id == call.user.id and now.display_name != entered.display_name:
        await presence_of(call.session).rename(key, present_user(now))


async def _history_up_to(
    call: EventCall, room_id: uuid.UUID, read: list[dict[str, Any]], upto: int
) -> list[dict[str, Any]]:
    """The last :data:`HISTORY_ON_JOIN` messages up to seq ``upto``: those read in the join's transaction
    when they reach that far (the usual case), else read again."""
    kept = [m for m in read if m["seq"] <= upto]
    if len(kept) == min(HISTORY_ON_JOIN, upto) and (not kept or kept[-1]["seq"] == upto):
        return kept
    async with call.core.pool.acquire() as conn:
        return await recent_messages(conn, room_id, HISTORY_ON_JOIN, before_seq=upto + 1)


async def _missed_up_to(
    call: EventCall, room_id: uuid.UUID, read: list[dict[str, Any]], after_seq: int, upto: int, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The messages after ``after_seq`` up to seq ``upto`` (at most ``limit``, ascending) and whether more
    lie between them and ``upto``: those read in the join's transaction when they cover that run (seqs have
    no holes, so a run is complete when its length is right), else read again."""
    kept = [m for m in read if m["seq"] <= upto]
    want = min(limit, max(0, upto - after_seq))
    if len(kept) != want or (kept and kept[0]["seq"] != after_seq + 1):
        async with call.core.pool.acquire() as conn:
            rows, _ = await chat_store.history(conn, room_id, upto + 1, after_seq, limit)
            kept = await views(conn, rows)
    last = kept[-1]["seq"] if kept else after_seq
    return kept, last < upto


async def leave(call: EventCall, room_id: uuid.UUID) -> None:
    """Leave a room this connection joined (announcing the user if it was their last connection there).

    Leaving a room one is not in is a no-op, but a room the caller may not see is still ``not_found``.
    """
    key = str(room_id)
    lock = _turn(call.session, key)
    try:
        async with lock:
            await _leave(call, room_id)
    finally:
        _done_with_turn(call.session, key, lock)


async def _leave(call: EventCall, room_id: uuid.UUID) -> None:
    key = str(room_id)
    rooms = joined_rooms(call.session)
    if key not in rooms:
        async with call.core.pool.acquire() as conn:
            await visible_room(conn, call.user, room_id)
        return
    rooms.discard(key)
    await call.transport.leave_room(call.sid, socket_room(key))
    gone = await presence_of(call.session).leave(key, call.sid)
    if gone is not None:
        await announcer_of(call.session).change(key, gone.user, "left", gone.rev)


async def drop_user(call: EventCall, room_id: uuid.UUID, user_id: uuid.UUID) -> None:
    """Take a user out of a room on every node (kick, ban): out of its presence, announcing ``left`` if
    they were there, and each of their connections out of the Socket.IO room.

    The sids come from presence, which knows every joined connection on every node; python-socketio's
    Redis manager carries a ``leave_room`` for a sid held elsewhere to the node holding it. Redis keeps
    one publisher's messages in order, so broadcasts sent after this no longer reach those connections.
    Their own later ``room:leave`` or disconnect then finds nothing to announce.
    """
    gone, sids = await presence_of(call.session).remove_user(str(room_id), str(user_id))
    for sid in sids:
        await call.transport.leave_room(sid, socket_room(room_id))
    if gone is not None:
        await announcer_of(call.session).change(str(room_id), gone.user, "left", gone.rev)


REMOVED_EVENT = "room:removed"
"""s→c ``{room_id, reason: "access", message}``: the connection was taken out of a room it may no longer be
in (its user left or was removed from the room's community, lost the role that let them see it, ...)."""


async def recheck(conn: Connection) -> None:
    """The user's rights changed: leave every joined room they may no longer act in, and say so.

    ``conn.user`` is the account as just re-read. A room the connection was already taken out of (a kick
    or ban evicts it first, with ``room:kicked``) is forgotten without another word.
    """
    rooms = joined_rooms(conn.session)
    if not rooms:
        return
    await _tell_rename(conn, rooms)
    lost: list[tuple[str, str]] = []
    async with conn.core.pool.acquire() as db:
        for key in list(rooms):
            try:
                await require_member(db, conn.user, uuid.UUID(key))
            except AppError as exc:
                lost.append((key, exc.message))
    presence = presence_of(conn.session)
    for key, message in lost:
        if key not in rooms:
            continue  # left meanwhile
        rooms.discard(key)
        still_in = socket_room(key) in conn.transport.rooms_of(conn.sid)
        await conn.transport.leave_room(conn.sid, socket_room(key))
        gone = await presence.leave(key, conn.sid)
        if gone is not None:
            await announcer_of(conn.session).change(key, gone.user, "left", gone.rev)
        if still_in:
            data = {"room_id": key, "reason": "access", "message": message}
            await conn.transport.emit(REMOVED_EVENT, data, to=conn.sid)


async def _tell_rename(conn: Connection, rooms: set[str]) -> None:
    """The user's account was re-read: if their display name changed, the user's presence entry in each room
    this connection is in takes the new name (the next join there lists it), then the room hears
    ``room:renamed`` (each of a user's connections tells its rooms; a client applies it by user id, so hearing
    it twice changes nothing)."""
    told = conn.session.get(_NAME)
    name = conn.user.display_name
    if told is None or told == name:
        return
    conn.session[_NAME] = name
    presence = presence_of(conn.session)
    renamed = present_user(conn.user)
    user = UserRef(id=str(conn.user.id), display_name=name).model_dump(mode="json")
    for key in list(rooms):
        try:
            await presence.rename(key, renamed)
        except Exception:  # the room still hears the new name; its next joins list the old one
            log.exception("could not rename user %s in the presence of room %s", renamed.id, key)
        await conn.transport.emit(RENAMED_EVENT, {"room_id": key, "user": user}, to=socket_room(key))


async def leave_all(conn: Connection) -> None:
    """A disconnect: leave every room the connection had joined."""
    conn.session[_CLOSED] = True
    rooms = joined_rooms(conn.session)
    presence = presence_of(conn.session)
    while rooms:
        key = rooms.pop()
        gone = await presence.leave(key, conn.sid)
        if gone is not None:
            await announcer_of(conn.session).change(key, gone.user, "left", gone.rev, skip_sid=conn.sid)
