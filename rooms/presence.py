"""Who is in which room, right across nodes.

A user is *present* in a room while at least one of their connections (a Socket.IO sid, on any node) has
joined it. :class:`Presence` tells the caller when a user's first connection enters (announce "joined")
and when their last one leaves (announce "left"), so a second browser tab never re-announces anybody.

Two implementations, chosen once at start-up by :func:`open_presence`:

- :class:`LocalPresence`: one process, plain dictionaries (no Redis configured).
- :class:`RedisPresence`: shared by every node through Redis. Each room keeps three hashes
  (``conns``: ``<node>:<sid>`` → user id; ``counts``: user id → connections; ``users``: user id → user
  JSON, with the display name) and a revision counter, changed only by Lua scripts, so "first in" and
  "last out" are decided atomically even when two nodes race. Each node refreshes a heartbeat key with a
  TTL (``presence_ttl_s``) every ``presence_heartbeat_s`` and, on the same beat, sweeps the entries of
  every node whose heartbeat has expired, reporting the users who thereby vanish: a member whose node died
  is gone within about ``presence_ttl_s + presence_heartbeat_s`` seconds. A node that finds its own
  heartbeat gone (it stalled past the TTL and was swept) enters its live connections again.

**Revisions.** Every change of a room's list of users (someone's first connection entering, someone's
last one leaving) increments the room's revision in the same atomic step, and the change carries it; a
snapshot of the list (:meth:`Presence.snapshot`) says which revision it is. Announcements travel by
different paths (nodes, batches), so a client may hear of a change before the answer that lists the room,
or of two users' changes in the other order; the revisions let it tell which is newer (the merge rule is in
``docs/rooms-and-chat.md``). A room's counter is kept when the room empties, so revisions never go back.

**Names.** Each user's entry carries their display name, so a snapshot lists the people present by name with
no database read. A rename (``PATCH /me``) reaches every connection of the user (the rights event), and each
rewrites the user's entry in the rooms it is in (:meth:`Presence.rename`) before telling them ``room:renamed``.

:func:`keep_presence` is the background loop that drives the beats; the app owns it (started and
cancelled in a ``cleanup_ctx``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import redis.asyncio as aioredis

from core_api.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


async def _done(result: Awaitable[T] | T) -> T:
    """redis-py types its commands as sync-or-async; on the asyncio client they are awaitables."""
    if inspect.isawaitable(result):
        return await result
    return result


@dataclass(frozen=True)
class PresentUser:
    id: str
    display_name: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "display_name": self.display_name}


@dataclass(frozen=True)
class PresenceChange:
    """A user appearing in or vanishing from a room, with the room's revision that the change made."""

    room_id: str
    user: PresentUser
    state: Literal["joined", "left"]
    rev: int


@dataclass(frozen=True)
class PresenceSnapshot:
    """The users present in a room (ordered by display name) as of revision ``rev``."""

    rev: int
    users: list[PresentUser]


def _ordered(users: list[PresentUser]) -> list[PresentUser]:
    return sorted(users, key=lambda u: (u.display_name.casefold(), u.id))


class Presence(Protocol):
    """Room presence of connections and users (see the module docstring)."""

    async def enter(self, room_id: str, sid: str, user: PresentUser) -> int | None:
        """Record that connection ``sid`` of ``user`` joined the room.

        Returns the room's new revision if it is the user's first connection there, else None.
        """
        ...

    async def leave(self, room_id: str, sid: str) -> PresenceChange | None:
        """Forget connection ``sid`` in the room; the ``left`` change if that was the user's last one there."""
        ...

    async def remove_user(self, room_id: str, user_id: str) -> tuple[PresenceChange | None, list[str]]:
        """Forget every connection of a user in the room, on every node (kick, ban).

        Returns the ``left`` change if they were present, and the sids of their connections in the room
        (on any node), which the caller takes out of the Socket.IO room.
        """
        ...

    async def snapshot(self, room_id: str) -> PresenceSnapshot:
        """The users present in the room and the revision that list is, read in one atomic step."""
        ...

    async def enter_and_snapshot(
        self, room_id: str, sid: str, user: PresentUser
    ) -> tuple[int | None, PresenceSnapshot]:
        """:meth:`enter`, then :meth:`snapshot`, in one atomic step (one round trip: a join does both)."""
        ...

    async def rename(self, room_id: str, user: PresentUser) -> bool:
        """Give the user's entry in the room the display name ``user`` carries, if they are present there
        (whether they were)."""
        ...

    async def members(self, room_id: str) -> list[PresentUser]:
        """The users present in the room, ordered by display name."""
        ...

    async def connections(self, room_id: str) -> list[tuple[str, str]]:
        """Every connection in the room, on every node: ``(sid, user id)`` pairs (for sending users
        different views of one thing, such as a watch party whose playlist holds a paid lecture)."""
        ...

    async def upkeep(self) -> list[PresenceChange]:
        """One heartbeat: keep this node alive and sweep dead ones; the changes to announce."""
        ...

    async def close(self) -> list[PresenceChange]:
        """Withdraw this node's connections (shutdown); the users who thereby left their rooms."""
        ...


# --- in-process ----------------------------------------------------------------------------------


@dataclass
class _LocalRoom:
    conns: dict[str, PresentUser] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    users: dict[str, PresentUser] = field(default_factory=dict)


class LocalPresence:
    """Presence for a single process: nothing outlives it, so upkeep has nothing to do."""

    def __init__(self) -> None:
        self._rooms: dict[str, _LocalRoom] = {}
        self._revs: dict[str, int] = {}  # kept when a room empties, so that revisions never go back

    def _bump(self, room_id: str) -> int:
        rev = self._revs[room_id] = self._revs.get(room_id, 0) + 1
        return rev

    async def enter(self, room_id: str, sid: str, user: PresentUser) -> int | None:
        room = self._rooms.setdefault(room_id, _LocalRoom())
        if sid in room.conns:
            return None
        room.conns[sid] = user
        room.users[user.id] = user
        room.counts[user.id] = room.counts.get(user.id, 0) + 1
        return self._bump(room_id) if room.counts[user.id] == 1 else None

    async def leave(self, room_id: str, sid: str) -> PresenceChange | None:
        room = self._rooms.get(room_id)
        if room is None or sid not in room.conns:
            return None
        user = room.conns.pop(sid)
        room.counts[user.id] -= 1
        if room.counts[user.id] > 0:
            return None
        del room.counts[user.id]
        gone = room.users.pop(user.id)
        if not room.conns:
            del self._rooms[room_id]
        return PresenceChange(room_id, gone, "left", self._bump(room_id))

    async def remove_user(self, room_id: str, user_id: str) -> tuple[PresenceChange | None, list[str]]:
        room = self._rooms.get(room_id)
        if room is None or user_id not in room.users:
            return None, []
        sids = [sid for sid, user in room.conns.items() if user.id == user_id]
        change = None
        for sid in sids:
            change = await self.leave(room_id, sid) or change
        return change, sids

    async def snapshot(self, room_id: str) -> PresenceSnapshot:
        room = self._rooms.get(room_id)
        return PresenceSnapshot(self._revs.get(room_id, 0), _ordered(list(room.users.values())) if room else [])

    async def enter_and_snapshot(
        self, room_id: str, sid: str, user: PresentUser
    ) -> tuple[int | None, PresenceSnapshot]:
        rev = await self.enter(room_id, sid, user)
        return rev, await self.snapshot(room_id)

    async def rename(self, room_id: str, user: PresentUser) -> bool:
        room = self._rooms.get(room_id)
        if room is None or user.id not in room.users:
            return False
        room.users[user.id] = user
        for sid, conn_user in room.conns.items():
            if conn_user.id == user.id:
                room.conns[sid] = user
        return True

    async def members(self, room_id: str) -> list[PresentUser]:
        return (await self.snapshot(room_id)).users

    async def connections(self, room_id: str) -> list[tuple[str, str]]:
        room = self._rooms.get(room_id)
        return [(sid, user.id) for sid, user in room.conns.items()] if room else []

    async def upkeep(self) -> list[PresenceChange]:
        return []

    async def close(self) -> list[PresenceChange]:
        changes = [
            PresenceChange(room_id, user, "left", self._bump(room_id))
            for room_id, room in self._rooms.items()
            for user in room.users.values()
        ]
        self._rooms.clear()
        return changes


# --- Redis ---------------------------------------------------------------------------------------

# Every script takes KEYS: conns, users, counts, rev (the room's revision counter, a string).

# ARGV: field (<node>:<sid>), user id, user JSON. Returns the room's new revision if this is the user's
# first connection there, else 0.
_ENTER = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if redis.call('HINCRBY', KEYS[3], ARGV[2], 1) == 1 then return redis.call('INCR', KEYS[4]) end
return 0
"""

# Removes one connection field; returns {user JSON, new revision} when it was the user's last connection.
_DROP = """
local function drop(f)
  local uid = redis.call('HGET', KEYS[1], f)
  if not uid then return nil end
  redis.call('HDEL', KEYS[1], f)
  if redis.call('HINCRBY', KEYS[3], uid, -1) > 0 then return nil end
  redis.call('HDEL', KEYS[3], uid)
  local user = redis.call('HGET', KEYS[2], uid)
  redis.call('HDEL', KEYS[2], uid)
  return {user, redis.call('INCR', KEYS[4])}
end
"""

# ARGV: field. Returns {user JSON, revision} or nil.
_LEAVE = (
    _DROP
    + """
local gone = drop(ARGV[1])
if gone then return gone end
return false
"""
)

# ARGV: "<node>:". Drops every connection of that node in the room; returns
# {user JSON, revision, user JSON, revision, ...} for the users who thereby left.
_PURGE = (
    _DROP
    + """
local gone = {}
local fields = redis.call('HKEYS', KEYS[1])
for _, f in ipairs(fields) do
  if string.sub(f, 1, #ARGV[1]) == ARGV[1] then
    local left = drop(f)
    if left then
      table.insert(gone, left[1])
      table.insert(gone, left[2])
    end
  end
end
return gone
"""
)


# ARGV: user id. Drops all of the user's connections; returns {user JSON or "", revision or 0, field,
# field, ...} with the dropped "<node>:<sid>" fields.
_REMOVE_USER = """
local user = redis.call('HGET', KEYS[2], ARGV[1])
if not user then return {'', 0} end
local out = {user, redis.call('INCR', KEYS[4])}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], all[i])
    table.insert(out, all[i])
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return out
"""

# Returns {revision, user JSONs}: the list and the revision it is, in one step. The user JSONs are one string,
# joined by newlines (JSON text from json.dumps has none): one bulk string for the client to read instead of one
# per user (redis-py reads each in Python).
_SNAPSHOT = """
return {tonumber(redis.call('GET', KEYS[4]) or '0'), table.concat(redis.call('HVALS', KEYS[2]), '\\n')}
"""

# _ENTER, then _SNAPSHOT, in one step. Returns {_ENTER's answer, revision, user JSONs} (as _SNAPSHOT).
_ENTER_SNAPSHOT = """
local entered = 0
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  if redis.call('HINCRBY', KEYS[3], ARGV[2], 1) == 1 then entered = redis.call('INCR', KEYS[4]) end
end
local rev = tonumber(redis.call('GET', KEYS[4]) or '0')
return {entered, rev, table.concat(redis.call('HVALS', KEYS[2]), '\\n')}
"""

# ARGV: user id, user JSON. Rewrites the user's entry if they are present; returns 1 if so, else 0.
_RENAME = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


class RedisPresence:
    """Presence shared by all nodes through Redis, with per-node heartbeats (see the module docstring).

    Args:
        client: a ``redis.asyncio`` client made with ``decode_responses=True``.
        node_id: this node's id, unique among live nodes (the Socket.IO server's ``node_id``).
        ttl_s: how long this node's heartbeat lives without a refresh; after that other nodes sweep it.
        prefix: namespace of every key (tests use their own).
        owns_client: close ``client`` in :meth:`close`.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        node_id: str,
        *,
        ttl_s: float,
        prefix: str = "studyhall:presence",
        owns_client: bool = False,
    ) -> None:
        if ":" in node_id:
            raise ValueError("node_id must not contain ':'")
        self.redis = client
        self.node_id = node_id
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.prefix = prefix
        self._owns_client = owns_client
        self._local: dict[tuple[str, str], PresentUser] = {}
        self._beaten = False
        self._enter = client.register_script(_ENTER)
        self._leave = client.register_script(_LEAVE)
        self._purge = client.register_script(_PURGE)
        self._remove_user = client.register_script(_REMOVE_USER)
        self._snapshot = client.register_script(_SNAPSHOT)
        self._enter_snapshot = client.register_script(_ENTER_SNAPSHOT)
        self._rename = client.register_script(_RENAME)
        self._decoded: dict[str, tuple[tuple[str, str], PresentUser]] = {}
        self._indexed: set[str] = set()

    @classmethod
    def from_url(cls, url: str, node_id: str, *, ttl_s: float, prefix: str = "studyhall:presence") -> RedisPresence:
        client = aioredis.Redis.from_url(url, decode_responses=True)
        return cls(client, node_id, ttl_s=ttl_s, prefix=prefix, owns_client=True)

    # --- keys ---

    def _room_keys(self, room_id: str) -> list[str]:
        base = f"{self.prefix}:room:{{{room_id}}}"  # one hash slot per room, for Redis Cluster
        return [f"{base}:conns", f"{base}:users", f"{base}:counts", f"{base}:rev"]

    def _alive_key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:alive"

    def _node_rooms_key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:rooms"

    @property
    def _nodes_key(self) -> str:
        return f"{self.prefix}:nodes"

    # --- Presence ---

    async def enter(self, room_id: str, sid: str, user: PresentUser) -> int | None:
        self._local[(room_id, sid)] = user
        await self._index(room_id)
        rev = await self._enter(keys=self._room_keys(room_id), args=[f"{self.node_id}:{sid}", user.id, _encode(user)])
        return int(rev) or None

    async def leave(self, room_id: str, sid: str) -> PresenceChange | None:
        self._local.pop((room_id, sid), None)
        gone = await self._leave(keys=self._room_keys(room_id), args=[f"{self.node_id}:{sid}"])
        return PresenceChange(room_id, _user(gone[0]), "left", int(gone[1])) if gone else None

    async def remove_user(self, room_id: str, user_id: str) -> tuple[PresenceChange | None, list[str]]:
        for key in [k for k, user in self._local.items() if k[0] == room_id and user.id == user_id]:
            del self._local[key]
        gone, rev, *fields = await self._remove_user(keys=self._room_keys(room_id), args=[user_id])
        change = PresenceChange(room_id, _user(gone), "left", int(rev)) if gone else None
        return change, [f.partition(":")[2] for f in fields]

    async def snapshot(self, room_id: str) -> PresenceSnapshot:
        rev, users = await self._snapshot(keys=self._room_keys(room_id))
        return PresenceSnapshot(int(rev), self._listed(users))

    async def enter_and_snapshot(
        self, room_id: str, sid: str, user: PresentUser
    ) -> tuple[int | None, PresenceSnapshot]:
        self._local[(room_id, sid)] = user
        await self._index(room_id)
        entered, rev, users = await self._enter_snapshot(
            keys=self._room_keys(room_id), args=[f"{self.node_id}:{sid}", user.id, _encode(user)]
        )
        return int(entered) or None, PresenceSnapshot(int(rev), self._listed(users))

    async def rename(self, room_id: str, user: PresentUser) -> bool:
        for key, held in self._local.items():  # a re-entry after a missed heartbeat enters the new name
            if key[0] == room_id and held.id == user.id:
                self._local[key] = user
        return bool(await self._rename(keys=self._room_keys(room_id), args=[user.id, _encode(user)]))

    async def _index(self, room_id: str) -> None:
        """Put the room into the node's index before entering a connection there, so a sweep after this node's
        death finds it. Once per room and heartbeat: :meth:`_prune_index` forgets what it takes out, and each
        beat forgets all (the index may have been swept meanwhile, if this node stalled)."""
        if room_id in self._indexed:
            return
        await _done(self.redis.sadd(self._node_rooms_key(self.node_id), room_id))
        self._indexed.add(room_id)

    def _listed(self, joined: str) -> list[PresentUser]:
        """Entries as :class:`PresentUser`, ordered by name. An entry's text is the same for every join that
        reads it until the user leaves or is renamed, so each is decoded once per node (a reconnect storm reads
        the same hundreds of entries thousands of times)."""
        decoded = self._decoded
        if len(decoded) > _DECODED_MAX:
            decoded.clear()
        pairs = []
        for text in joined.split("\n") if joined else ():
            pair = decoded.get(text)
            if pair is None:
                user = _user(text)
                pair = decoded[text] = ((user.display_name.casefold(), user.id), user)
            pairs.append(pair)
        pairs.sort(key=_first)
        return [user for _, user in pairs]

    async def members(self, room_id: str) -> list[PresentUser]:
        return (await self.snapshot(room_id)).users

    async def connections(self, room_id: str) -> list[tuple[str, str]]:
        conns = await _done(self.redis.hgetall(self._room_keys(room_id)[0]))
        return [(field.partition(":")[2], user_id) for field, user_id in conns.items()]

    async def upkeep(self) -> list[PresenceChange]:
        changes = await self._beat()
        await self._prune_index()
        for node_id in await _done(self.redis.smembers(self._nodes_key)):
            if node_id != self.node_id and not await _done(self.redis.exists(self._alive_key(node_id))):
                changes.extend(await self.purge_node(node_id))
        return changes

    async def close(self) -> list[PresenceChange]:
        try:
            self._local.clear()
            self._indexed.clear()
            changes = await self.purge_node(self.node_id)
            await self.redis.delete(self._alive_key(self.node_id))
            return changes
        finally:
            if self._owns_client:
                await self.redis.aclose()

    # --- heartbeat and sweep ---

    async def _beat(self) -> list[PresenceChange]:
        self._indexed.clear()
        previous = await self.redis.set(self._alive_key(self.node_id), "1", px=self.ttl_ms, get=True)
        await _done(self.redis.sadd(self._nodes_key, self.node_id))
        swept = previous is None and self._beaten
        self._beaten = True
        if not swept:
            return []
        # Another node took us for dead and removed our connections: they are still here, so enter again.
        log.warning("presence heartbeat of node %s had expired; re-entering its connections", self.node_id)
        changes: list[PresenceChange] = []
        for (room_id, sid), user in list(self._local.items()):
            rev = await self.enter(room_id, sid, user)
            if rev is not None:
                changes.append(PresenceChange(room_id, user, "joined", rev))
        return changes

    async def _prune_index(self) -> None:
        """Drop rooms this node no longer has connections in from its index (it would only grow)."""
        key = self._node_rooms_key(self.node_id)
        stale = set(await _done(self.redis.smembers(key))) - {room_id for room_id, _ in self._local}
        if not stale:
            return
        self._indexed -= stale  # before the removal: a join from now on indexes its room again
        await _done(self.redis.srem(key, *stale))
        # A connection may have entered one of them meanwhile: index it again.
        back = stale & {room_id for room_id, _ in self._local}
        if back:
            await _done(self.redis.sadd(key, *back))

    async def purge_node(self, node_id: str) -> list[PresenceChange]:
        """Remove every connection of ``node_id``; the users who thereby left their rooms."""
        changes: list[PresenceChange] = []
        for room_id in await _done(self.redis.smembers(self._node_rooms_key(node_id))):
            gone = await self._purge(keys=self._room_keys(room_id), args=[f"{node_id}:"])
            pairs = zip(gone[::2], gone[1::2], strict=True)
            changes.extend(PresenceChange(room_id, _user(raw), "left", int(rev)) for raw, rev in pairs)
        await self.redis.delete(self._node_rooms_key(node_id))
        await _done(self.redis.srem(self._nodes_key, node_id))
        return changes


def _user(raw: Any) -> PresentUser:
    data = json.loads(raw)
    return PresentUser(id=str(data["id"]), display_name=str(data["display_name"]))


def _encode(user: PresentUser) -> str:
    return json.dumps(user.to_json())


def _first(pair: tuple[tuple[str, str], PresentUser]) -> tuple[str, str]:
    return pair[0]


_DECODED_MAX = 100_000
"""Most decoded presence entries a node keeps (each a few hundred bytes); past it they are decoded afresh."""


# --- assembly ------------------------------------------------------------------------------------


def open_presence(settings: Settings, node_id: str) -> Presence:
    """Redis presence when ``STUDYHALL_REDIS_URL`` is set, in-process presence otherwise."""
    if settings.redis_url is None:
        return LocalPresence()
    return RedisPresence.from_url(settings.redis_url.get_secret_value(), node_id, ttl_s=settings.presence_ttl_s)


async def keep_presence(
    presence: Presence, interval_s: float, announce: Callable[[list[PresenceChange]], Awaitable[None]]
) -> None:
    """Beat every ``interval_s`` until cancelled, handing what each beat found to ``announce``.

    A failed beat (Redis briefly unreachable) is logged and retried on the next one; the node's
    heartbeat outlives a few missed beats because its TTL is longer than the interval.
    """
    while True:
        try:
            changes = await presence.upkeep()
            if changes:
                await announce(changes)
        except Exception:
            log.exception("presence upkeep failed; retrying in %.1f s", interval_s)
        await asyncio.sleep(interval_s)
