"""Watch party use cases: commands, ready marks, sync, heartbeats and the sync report.

Access comes from :mod:`rooms.access` (a command needs an unbanned membership of an open room; a
heartbeat needs the connection to have joined the room), the rules from :mod:`watch_party.core`, and
every change goes row-locked through the database, then out to the room (see :mod:`watch_party.node`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, MutableMapping
from typing import Any, cast

from core_api.courses import visible_lecture
from core_api.db import Record
from core_api.errors import forbidden
from core_api.events import Connection, EventCall
from core_api.http import Principal
from core_api.paywall import media_access
from rooms.access import active, require_member, require_open, socket_room
from rooms.schemas import RoomOut
from watch_party import codec, core, drift, store
from watch_party.core import Actor, Command, Context, Item, Media, Person
from watch_party.drift import Beat
from watch_party.node import WatchNode
from watch_party.schemas import HeartbeatIn, MediaIn

WATCH = "watch_party.node"
"""Session key under which the server hands every connection the app's :class:`WatchNode`."""
_WATCHED = "watch_party.watched"
"""Session key: the rooms this connection took part in (synced, commanded, heartbeats)."""
SANE_OFFSET_S = 24 * 3600.0
"""A client's clock-offset estimate placing its sample further than this from our clock is ignored."""


def node_of(session: Mapping[str, Any]) -> WatchNode:
    node = session.get(WATCH)
    if node is None:
        raise RuntimeError("this server runs no watch parties (realtime.app provides them)")
    return cast(WatchNode, node)


def person(user: Principal) -> Person:
    return Person(str(user.id), user.display_name)


def actor_of(user: Principal, member: Record | None) -> Actor:
    membership = active(member)
    return Actor(person(user), membership["role"] if membership is not None else None, user.is_admin)


def watched(session: MutableMapping[str, Any]) -> set[str]:
    rooms: set[str] = session.setdefault(_WATCHED, set())
    return rooms


# --- commands ------------------------------------------------------------------------------------


async def command(
    call: EventCall, room_id: uuid.UUID, cmd: Command, based_on: int | None, cause: str
) -> dict[str, Any]:
    """Apply one command under the room's row lock; broadcast and answer with the resulting state."""
    node = node_of(call.session)
    present = await node.present_ids(str(room_id))
    rules = await node.rules_for(str(room_id))
    async with call.core.transaction() as tx:
        room, member = await require_member(tx.conn, call.user, room_id)
        require_open(room)
        state = await store.lock_state(tx.conn, room_id)
        viewers = await store.viewers(tx.conn, room_id, present)
        ctx = Context(now=node.clock(), present=viewers, rules=rules)
        new = core.apply(state, actor_of(call.user, member), cmd, ctx, based_on)
        if new is not state:
            await store.save_state(tx.conn, new)
    node.touch(str(room_id))
    watched(call.session).add(str(room_id))
    await node.publish(state, new, cause, person(call.user))
    return {"state": await node.view_for(new, str(call.user.id), cause=cause, by=person(call.user))}


async def new_item(call: EventCall, media: MediaIn) -> Item:
    """A playlist item for ``media``; a lecture's URL, kind, duration and title come from its course.

    A lecture of a priced course can be put up only by someone entitled to play it (enrolled, its owner,
    an admin); viewers who are not get the state without its URL (:meth:`WatchNode.broadcast_state`).
    """
    if media.lecture_id is None:
        assert media.url is not None
        assert media.kind is not None
        resolved = Media(url=media.url, kind=media.kind, duration=media.duration, title=media.title)
    else:
        async with call.core.pool.acquire() as conn:
            lecture, course = await visible_lecture(conn, call.user, media.lecture_id)
            access = await media_access(conn, call.user, course)
        if access.locked:
            raise forbidden(access.reason or "you may not play this lecture")
        resolved = Media(
            url=lecture["media_url"],
            kind=lecture["media_kind"],
            duration=lecture["duration_s"] or None,
            title=lecture["title"],
            lecture_id=str(media.lecture_id),
        )
    return Item(id=uuid.uuid4().hex, media=resolved, added_by=str(call.user.id))


async def set_ready(call: EventCall, room_id: uuid.UUID, ready: bool) -> dict[str, Any]:
    """Mark the caller (not) ready for the current item; a play waiting for the ready check may start."""
    node = node_of(call.session)
    present = await node.present_ids(str(room_id))
    rules = await node.rules_for(str(room_id))
    async with call.core.transaction() as tx:
        room, _ = await require_member(tx.conn, call.user, room_id)
        require_open(room)
        state = await store.lock_state(tx.conn, room_id)
        viewers = await store.viewers(tx.conn, room_id, present)
        ctx = Context(now=node.clock(), present=viewers, rules=rules)
        new = core.set_ready(state, str(call.user.id), ready, ctx)
        if new is not state:
            await store.save_state(tx.conn, new)
    node.touch(str(room_id))
    await node.publish(state, new, "ready", person(call.user))
    return {"readiness": codec.readiness_view(new, present)}


# --- reading -------------------------------------------------------------------------------------


async def sync(call: EventCall, room_id: uuid.UUID) -> dict[str, Any]:
    """The room's state now, who is ready, the server's clock and the correction rule's thresholds."""
    node = node_of(call.session)
    async with call.core.pool.acquire() as conn:
        await require_member(conn, call.user, room_id)
        state = await node.read(conn, room_id)
    node.remember(state)
    node.touch(str(room_id))
    watched(call.session).add(str(room_id))
    present = await node.present_ids(str(room_id))
    return {
        "state": await node.view_for(state, str(call.user.id)),
        "readiness": codec.readiness_view(state, present),
        "tuning": node.tuning,
        "server_time": node.clock(),
    }


async def on_room_joined(call: EventCall, room: RoomOut) -> None:
    """``room:join`` hook: a viewer joining a watch room gets the state (and readiness) at once."""
    if room.kind != "watch":
        return
    node = node_of(call.session)
    async with call.core.pool.acquire() as conn:
        state = await node.read(conn, room.id)
    node.remember(state)
    node.touch(str(room.id))
    watched(call.session).add(str(room.id))
    present = await node.present_ids(str(room.id))
    await call.transport.emit("watch:state", await node.view_for(state, str(call.user.id)), to=call.sid)
    await call.transport.emit("watch:readiness", codec.readiness_view(state, present), to=call.sid)


# --- heartbeats and the sync report --------------------------------------------------------------


def connection_key(node: WatchNode, sid: str) -> str:
    return f"{node.transport.node_id}:{sid}"


async def heartbeat(call: EventCall, data: HeartbeatIn) -> dict[str, Any]:
    """Record where the caller's player is; answer with the times a client needs for clock sync.

    The ack carries ``client_time`` (echoed), ``received_at`` and ``server_time`` (when the answer left):
    with the client's own send and receive times that is NTP's four timestamps, so the server's
    processing time does not count as network delay. ``version`` is the newest state this node knows:
    a client behind it missed a broadcast and should ask ``watch:sync``.
    """
    node = node_of(call.session)
    received = node.clock()
    key = str(data.room_id)
    if socket_room(key) not in call.transport.rooms_of(call.sid):
        raise forbidden("join the room first")
    state = await node.state(data.room_id, at_least=data.version)
    sampled = received - (data.rtt or 0.0) / 2
    if data.offset is not None and abs(data.client_time + data.offset - received) < SANE_OFFSET_S:
        sampled = min(received, data.client_time + data.offset)
    beat = Beat(
        key=connection_key(node, call.sid),
        user=person(call.user),
        position=data.position,
        playing=data.playing,
        version=data.version,
        sampled_at=sampled,
        received_at=received,
        rtt=data.rtt,
    )
    await node.board.put(key, beat)
    watched(call.session).add(key)
    node.touch(key)
    node.progress.seen(call.user, beat.key, state, data.position, data.playing, sampled, received)
    return {
        "client_time": data.client_time,
        "received_at": received,
        "server_time": node.clock(),
        "version": state.version,
    }


async def report(call: EventCall, room_id: uuid.UUID) -> dict[str, Any]:
    """Per-viewer sync for whoever manages the party (leader, room host, moderators, admins)."""
    node = node_of(call.session)
    async with call.core.pool.acquire() as conn:
        _, member = await require_member(conn, call.user, room_id)
        state = await node.read(conn, room_id)
    node.remember(state)
    if not core.may_manage(state, actor_of(call.user, member)):
        raise forbidden("only the leader, the room host or a moderator sees the sync report")
    now = node.clock()
    settings = node.settings
    beats = await node.board.beats(str(room_id), newer_than=now - settings.watch_viewer_ttl_s)
    checks = [
        drift.check_beat(state, b, now, in_sync=settings.watch_in_sync_s, silent_after=3 * settings.watch_heartbeat_s)
        for b in beats
    ]
    checks.sort(key=lambda c: (c.status == "in_sync", -abs(c.drift), c.beat.user.display_name))
    live = [c for c in checks if c.status in ("in_sync", "drifting")]
    drifts = [c.drift for c in live]
    return {
        "server_time": now,
        "version": state.version,
        "viewers": [_viewer_row(c, now) for c in checks],
        "summary": {
            "connections": len(checks),
            "in_sync": sum(c.status == "in_sync" for c in checks),
            "out_of_step": sum(c.status != "in_sync" for c in checks),
            "max_drift_ms": round(max((abs(d) for d in drifts), default=0.0) * 1000, 1),
            "spread_ms": round((max(drifts) - min(drifts)) * 1000, 1) if drifts else 0.0,
        },
    }


def _viewer_row(check: drift.ViewerSync, now: float) -> dict[str, Any]:
    beat = check.beat
    return {
        "user": beat.user.to_json(),
        "connection": hashlib.sha256(beat.key.encode()).hexdigest()[:12],
        "status": check.status,
        "position": beat.position,
        "expected": check.expected,
        "drift_ms": round(check.drift * 1000, 1),
        "playing": beat.playing,
        "version": beat.version,
        "rtt_ms": round(beat.rtt * 1000, 1) if beat.rtt is not None else None,
        "age_s": round(now - beat.received_at, 2),
    }


async def on_disconnect(conn: Connection) -> None:
    """Drop the connection's beats, write its owner's last resume points, look at the rooms it took part
    in (the leader may have gone)."""
    node = node_of(conn.session)
    for room_id in watched(conn.session):
        await node.board.remove(room_id, connection_key(node, conn.sid))
        node.spawn(node.check(room_id))
    node.progress.forget(connection_key(node, conn.sid))
    node.progress.flush(str(conn.user.id))
