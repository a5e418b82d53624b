"""Live sessions on several nodes: each session is owned by one node, and ``live:*`` signalling that reaches
another node is forwarded to the owner over Redis (scaled mode; with no ``STUDYHALL_REDIS_URL`` nothing here
runs and every event is handled where it arrives).

**Ownership.** A session's state (members, hands, publishers' and viewers' WebRTC peers) lives in the
:class:`~live.signalling.LiveNode` of one node, its *owner*, named in Redis under
``studyhall:live:<deployment>:owner:<session id>`` with a TTL of ``STUDYHALL_LIVE_OWNER_TTL_S``. A node that
gets an event about a session nobody owns claims it (``SET NX``), so the first ``live:join`` (the lobby, before
the host goes live) places the session where it arrived; the owner renews the claim every third of the TTL
while it carries the session and deletes it (compare-and-delete) once it no longer does.

**Forwarding.** :func:`routed` wraps every event of the live table whose name starts with ``live:`` (whatever
the event: new ones are routed too). On a node that does not own the payload's ``session_id`` the event,
already validated and with the caller's account, is published on the owner's channel
``studyhall:live:<deployment>:node:<node id>`` with a correlation id; the owner runs the same handler for the
remote connection (its sid, a per-connection session dict of its own holding the rate limits) and answers on
the asking node's channel; the asking node acks its client with that answer, or with ``unavailable`` after
``STUDYHALL_LIVE_FORWARD_TIMEOUT_S``. What the owner sends to the session (``live:state`` to the Socket.IO
room ``live:<id>``, ``live:invited`` to ``user:<id>``) reaches connections on every node through
python-socketio's Redis manager, which also puts remote connections into rooms. Media then flows between the
browser and the owner directly (the owner's ICE candidates are in its answer).

**Faults.** A publish to the owner's channel that no node receives means the owner is gone (Redis drops a
dead connection's subscriptions at once): the claim is taken over and the event handled here. Every beat a
node checks the owners of the remote sessions its connections joined: one gone (its channel has no
subscriber) or replaced (the claim names another node) ends the session for those connections with
``live:ended`` ``{session_id, reason: "server_lost", message}``; joining again starts it on a live node. An
owner forgets the remote connections of a node that is gone, and a node that disconnects a client tells the
owners of the sessions it joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from core_api.errors import AppError, ErrorCode
from core_api.events import Connection, EventCall, EventHandler, Events, EventSpec
from core_api.http import Principal
from core_api.settings import Settings
from live.signalling import JOINED, LiveNode, live_room

log = logging.getLogger(__name__)

ROUTER = "live.router"
"""Session key under which the server hands every connection the app's :class:`Router` (scaled mode only)."""
ENDED = "live:ended"
"""s→c ``{session_id, reason, message}``: the session ended for this connection without its host ending it."""
RECONNECT_S = 1.0
MAX_ATTEMPTS = 3  # owner look-ups per event: a claim that moves (released, taken over) is looked up again

# Compare-and-renew, compare-and-delete, compare-and-replace: only the node named may change a claim.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_REPLACE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end "
    "return 0"
)


class _Moved(Exception):
    """The node asked does not own the session (any more): look the owner up again."""


class _Gone(Exception):
    """Nobody listens on the owner's channel: the owner is gone."""


@dataclass
class Guest:
    """A connection of another node, as the owner sees it: where it is and its own session dict."""

    origin: str
    session: dict[str, Any]
    used: float = field(default_factory=time.monotonic)


def _principal_out(user: Principal) -> dict[str, Any]:
    return {"id": str(user.id), "role": user.role, "email": user.email, "display_name": user.display_name,
            "session_id": str(user.session_id) if user.session_id else None}  # fmt: skip


def _principal_in(data: Mapping[str, Any]) -> Principal:
    sign_in = data.get("session_id")
    return Principal(uuid.UUID(data["id"]), data["role"], data["email"], data["display_name"],
                     uuid.UUID(sign_in) if sign_in else None)  # fmt: skip


def _error(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code.value, "message": message}}


def _session_of(payload: Any) -> uuid.UUID | None:
    session_id = getattr(payload, "session_id", None)
    return session_id if isinstance(session_id, uuid.UUID) else None


class Router:
    """Routes one node's ``live:*`` events to the sessions' owners and serves the events routed to it.

    Args:
        url: the Redis URL.
        namespace: the deployment's key prefix (one per database, like the bus channel).
        node: this node's live sessions.
        specs: the live events as declared (unwrapped), run here for remote connections.
        services: the app-scoped services a connection's session starts with (a remote connection's too).
        settings: the claim TTL and the forward timeout.
    """

    def __init__(
        self,
        url: str,
        namespace: str,
        node: LiveNode,
        specs: Mapping[str, EventSpec],
        services: Mapping[str, Any],
        settings: Settings,
    ) -> None:
        self.node = node
        self.node_id = node.transport.node_id
        self.redis = aioredis.Redis.from_url(url, client_name=f"studyhall-live-{self.node_id}")
        self.prefix = f"studyhall:live:{namespace}:"
        self.specs = dict(specs)
        self.services = services
        self.ttl_ms = int(settings.live_owner_ttl_s * 1000)
        self.beat_s = settings.live_owner_ttl_s / 3
        self.timeout_s = settings.live_forward_timeout_s
        self.idle_s = max(settings.live_join_rate_window_s, settings.live_signal_rate_window_s)
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.guests: dict[str, Guest] = {}  # remote sid → guest (owner side)
        self.routed: dict[str, dict[uuid.UUID, str]] = {}  # local sid → {session id: its owner} (asking side)
        self.sessions: dict[str, dict[str, Any]] = {}  # local sid → its session dict, for sids in ``routed``
        self.contacted: dict[str, set[str]] = {}  # local sid → the nodes it forwarded to (told when it goes)
        self.tasks: set[asyncio.Task[None]] = set()
        self.busy: dict[uuid.UUID, int] = {}  # session id → its events being handled here (claim kept meanwhile)
        self._held: list[uuid.UUID] = []
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._replace = self.redis.register_script(_REPLACE)

    # --- names -------------------------------------------------------------------------------------

    def owner_key(self, session_id: uuid.UUID) -> str:
        return f"{self.prefix}owner:{session_id}"

    def channel(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._subscribe()
        self._listener = asyncio.create_task(self._listen())
        self._beat = asyncio.create_task(self._run_beats())

    async def close(self) -> None:
        """Stop serving and forwarding (before the node's sessions close; :meth:`release_all` after)."""
        self._held = list(self.node.sessions)
        for task in (self._listener, self._beat, *self.tasks):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._listener, self._beat, *self.tasks) if t), return_exceptions=True)
        for future in self.pending.values():
            future.cancel()
        with contextlib.suppress(RedisError, OSError):
            if self._pubsub is not None:
                await self._pubsub.aclose()

    async def release_all(self) -> None:
        """Give up every claim (once the node's sessions are closed, on shutdown), then close Redis."""
        with contextlib.suppress(RedisError, OSError):
            for session_id in self._held:
                await self._release(keys=[self.owner_key(session_id)], args=[self.node_id])
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()

    async def _subscribe(self) -> None:
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(self.channel(self.node_id))
        async with asyncio.timeout(10):
            while True:
                message = await self._pubsub.get_message(timeout=1)
                if message is not None and message.get("type") == "subscribe":
                    return

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message.get("type") == "message":
                        self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                log.warning("lost the live routing subscription; reconnecting")
            except Exception:
                log.exception("live routing listener failed; reconnecting")
            await asyncio.sleep(RECONNECT_S)
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self._subscribe()

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_message(self, raw: bytes | str) -> None:
        try:
            message = json.loads(raw)
            kind = message["t"]
        except (ValueError, TypeError, KeyError):
            log.warning("dropped a malformed live routing message")
            return
        if kind == "reply":
            future = self.pending.get(str(message.get("id")))
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "call":
            self._spawn(self._serve(message))
        elif kind == "gone":
            self._spawn(self._guest_gone(str(message.get("sid"))))

    # --- ownership ---------------------------------------------------------------------------------

    async def owner_of(self, session_id: uuid.UUID) -> str:
        """The session's owner; claimed by this node when nobody owns it."""
        key = self.owner_key(session_id)
        for _ in range(MAX_ATTEMPTS):
            current = await self.redis.get(key)
            if current is not None:
                return str(current.decode())
            if await self.redis.set(key, self.node_id, nx=True, px=self.ttl_ms):
                return self.node_id
        raise AppError(ErrorCode.UNAVAILABLE, "the live session's server is changing; try again")

    async def _take_over(self, session_id: uuid.UUID, gone: str) -> None:
        await self._replace(keys=[self.owner_key(session_id)], args=[gone, self.node_id, self.ttl_ms])

    @contextlib.asynccontextmanager
    async def _handling(self, session_id: uuid.UUID) -> AsyncIterator[None]:
        """Around an event handled here: afterwards the claim is given up if this node carries no state for
        the session (nobody joined, or all left) and no other event about it is being handled."""
        self.busy[session_id] = self.busy.get(session_id, 0) + 1
        try:
            yield
        finally:
            self.busy[session_id] -= 1
            if not self.busy[session_id]:
                del self.busy[session_id]
                await self._settle(session_id)

    async def _settle(self, session_id: uuid.UUID) -> None:
        if session_id not in self.node.sessions and session_id not in self.busy:
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=[self.owner_key(session_id)], args=[self.node_id])

    # --- the asking side ---------------------------------------------------------------------------

    async def handle(self, spec: EventSpec, call: EventCall) -> dict[str, Any] | None:
        """Run ``spec`` here if this node owns the session, else on its owner; the answer either way."""
        session_id = _session_of(call.payload)
        if session_id is None:
            return await spec.handler(call)
        for _ in range(MAX_ATTEMPTS):
            try:
                owner = await self.owner_of(session_id)
            except (RedisError, OSError):
                raise AppError(ErrorCode.UNAVAILABLE, "live sessions cannot be reached right now") from None
            known = self.routed.get(call.sid, {}).get(session_id)
            if known is not None and known != owner:
                await self._lost(session_id, known)
            if owner == self.node_id:
                async with self._handling(session_id):
                    return await spec.handler(call)
            try:
                reply = await self._forward(owner, spec.name, call)
            except _Gone:
                log.warning("live session %s: its server %s is gone; carrying it here", session_id, owner)
                await self._lost(session_id, owner)
                await self._take_over(session_id, owner)
                continue
            except _Moved:
                continue
            await self._reconcile(call, session_id, owner, bool(reply.get("joined")))
            ack = reply.get("ack")
            if not isinstance(ack, dict):
                raise AppError(ErrorCode.INTERNAL, "the live session's server gave no answer")
            if ack.get("ok") is True:
                return {k: v for k, v in ack.items() if k != "ok"}
            error = ack.get("error") or {}
            try:
                code = ErrorCode(str(error.get("code")))
            except ValueError:
                code = ErrorCode.INTERNAL
            raise AppError(code, str(error.get("message", "refused")))
        raise AppError(ErrorCode.UNAVAILABLE, "the live session's server is changing; try again")

    async def _forward(self, owner: str, event: str, call: EventCall) -> dict[str, Any]:
        correlation = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[correlation] = future
        self.contacted.setdefault(call.sid, set()).add(owner)
        message = {"t": "call", "id": correlation, "from": self.node_id, "event": event, "sid": call.sid,
                   "user": _principal_out(call.user), "payload": call.payload.model_dump(mode="json")}  # fmt: skip
        try:
            try:
                receivers = await self.redis.publish(self.channel(owner), json.dumps(message))
            except (RedisError, OSError):
                raise AppError(ErrorCode.UNAVAILABLE, "live sessions cannot be reached right now") from None
            if receivers == 0:
                raise _Gone
            try:
                async with asyncio.timeout(self.timeout_s):
                    reply = await future
            except TimeoutError:
                raise AppError(
                    ErrorCode.UNAVAILABLE,
                    f"the server carrying this live session did not answer within {self.timeout_s:g} s; try again",
                ) from None
        finally:
            self.pending.pop(correlation, None)
        if reply.get("moved"):
            raise _Moved
        return reply

    async def _reconcile(self, call: EventCall, session_id: uuid.UUID, owner: str, joined: bool) -> None:
        """Keep this node's record of the connection's remote sessions as the owner left it."""
        local: set[uuid.UUID] = call.session.setdefault(JOINED, set())
        routes = self.routed.setdefault(call.sid, {})
        if joined:
            local.add(session_id)
            routes[session_id] = owner
            self.sessions[call.sid] = call.session
            with contextlib.suppress(Exception):  # the owner puts it in the room too (through Redis)
                await call.transport.enter_room(call.sid, live_room(session_id))
        else:
            if routes.pop(session_id, None) is not None:
                local.discard(session_id)
                with contextlib.suppress(Exception):
                    await call.transport.leave_room(call.sid, live_room(session_id))
        if not routes:
            self.routed.pop(call.sid, None)
            self.sessions.pop(call.sid, None)

    async def _lost(self, session_id: uuid.UUID, owner: str) -> None:
        """The owner of a session some local connections joined is gone: it ended for them."""
        message = "the server carrying this live session stopped; join it again to continue"
        for sid, routes in list(self.routed.items()):
            if routes.get(session_id) != owner:
                continue
            routes.pop(session_id)
            session = self.sessions.get(sid)
            if session is not None:
                session.get(JOINED, set()).discard(session_id)
            if not routes:
                self.routed.pop(sid, None)
                self.sessions.pop(sid, None)
            with contextlib.suppress(Exception):
                await self.node.transport.leave_room(sid, live_room(session_id))
                await self.node.transport.emit(
                    ENDED, {"session_id": str(session_id), "reason": "server_lost", "message": message}, to=sid
                )

    async def disconnected(self, conn: Connection) -> None:
        """A local connection closed: the owners of its remote sessions let it go."""
        routes = self.routed.pop(conn.sid, None) or {}
        self.sessions.pop(conn.sid, None)
        conn.session.get(JOINED, set()).difference_update(routes)
        for owner in self.contacted.pop(conn.sid, set()) | set(routes.values()):
            with contextlib.suppress(RedisError, OSError):
                await self.redis.publish(self.channel(owner), json.dumps({"t": "gone", "sid": conn.sid}))

    async def rights_changed(self, conn: Connection) -> None:
        """The user's rights changed: the owners of its remote sessions re-check them (``live:leave`` for
        those it may no longer be in, as the owner's own connections are)."""
        for session_id, owner in list(self.routed.get(conn.sid, {}).items()):
            try:
                await self.node._row(conn.user, session_id)
            except AppError:
                ref = self.specs["live:leave"].payload.model_validate({"session_id": session_id})
                call = EventCall(conn.sid, conn.user, ref, conn.core, conn.transport, conn.session)
                with contextlib.suppress(AppError, _Gone, _Moved):
                    reply = await self._forward(owner, "live:leave", call)
                    await self._reconcile(call, session_id, owner, bool(reply.get("joined")))

    # --- the owning side ---------------------------------------------------------------------------

    async def _serve(self, message: dict[str, Any]) -> None:
        origin, correlation = str(message.get("from")), str(message.get("id"))
        reply: dict[str, Any] = {"t": "reply", "id": correlation}
        try:
            reply.update(await self._run(origin, message))
        except _Moved:
            reply["moved"] = True
        except Exception:
            log.exception("a forwarded live event failed")
            reply["ack"] = _error(ErrorCode.INTERNAL, "internal error; it has been logged")
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(self.channel(origin), json.dumps(reply))

    async def _run(self, origin: str, message: Mapping[str, Any]) -> dict[str, Any]:
        spec = self.specs.get(str(message.get("event")))
        if spec is None:
            return {"ack": _error(ErrorCode.INVALID_INPUT, f"unknown event {str(message.get('event'))[:80]!r}")}
        try:
            payload = spec.payload.model_validate_json(json.dumps(message.get("payload")), strict=True)
            user = _principal_in(message["user"])
            sid = str(message["sid"])
        except (ValidationError, KeyError, TypeError, ValueError):
            return {"ack": _error(ErrorCode.INVALID_INPUT, f"{spec.name}: malformed forwarded event")}
        session_id = _session_of(payload)
        if session_id is None or await self.owner_of(session_id) != self.node_id:
            raise _Moved
        guest = self.guests.get(sid)
        if guest is None:
            guest = self.guests[sid] = Guest(origin, {**self.services, "user": user})
        guest.used = time.monotonic()
        guest.session["user"] = user
        call = EventCall(sid, user, payload, self.node.core, self.node.transport, guest.session)
        async with self._handling(session_id):
            try:
                result = await spec.handler(call)
                ack: dict[str, Any] = {"ok": True, **(result or {})}
            except AppError as exc:
                ack = _error(exc.code, exc.message)
        return {"ack": ack, "joined": session_id in guest.session.get(JOINED, set())}

    async def _guest_gone(self, sid: str) -> None:
        guest = self.guests.pop(sid, None)
        if guest is not None:
            await self._leave_guest(sid, guest)

    async def _leave_guest(self, sid: str, guest: Guest) -> None:
        joined: set[uuid.UUID] = guest.session.get(JOINED, set())
        sessions = set(joined)
        try:
            await self.node.leave_all(sid, joined)
        except Exception:
            log.exception("could not let a remote connection leave its live sessions")
        for session_id in sessions:
            await self._settle(session_id)

    # --- the beat ----------------------------------------------------------------------------------

    async def _run_beats(self) -> None:
        while True:
            await asyncio.sleep(self.beat_s)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                log.warning("live routing beat: Redis unavailable")
            except Exception:
                log.exception("live routing beat failed")

    async def _listening(self, node_id: str) -> bool:
        counts = await self.redis.pubsub_numsub(self.channel(node_id))
        return bool(counts and int(counts[0][1]) > 0)

    async def beat(self) -> None:
        """Renew this node's claims, end the sessions whose owner is gone for local connections, and forget
        the remote connections of nodes that are gone (and idle ones that joined nothing)."""
        for session_id in list(self.node.sessions):
            key = self.owner_key(session_id)
            if not await self._renew(keys=[key], args=[self.node_id, self.ttl_ms]) and not await self.redis.set(
                key, self.node_id, nx=True, px=self.ttl_ms
            ):
                log.warning("live session %s is carried here but claimed by %s", session_id, await self.redis.get(key))
        owners: dict[tuple[uuid.UUID, str], None] = {}
        for routes in self.routed.values():
            owners.update(dict.fromkeys(routes.items()))
        alive: dict[str, bool] = {}
        for session_id, owner in owners:
            if owner not in alive:
                alive[owner] = await self._listening(owner)
            current = await self.redis.get(self.owner_key(session_id))
            if not alive[owner] or (current is not None and current.decode() != owner):
                await self._lost(session_id, owner)
        now = time.monotonic()
        for sid, guest in list(self.guests.items()):
            if guest.origin not in alive:
                alive[guest.origin] = await self._listening(guest.origin)
            joined = guest.session.get(JOINED)
            if not alive[guest.origin] or (not joined and now - guest.used > self.idle_s):
                self.guests.pop(sid, None)
                await self._leave_guest(sid, guest)


def router_of(session: Mapping[str, Any]) -> Router | None:
    return cast(Router | None, session.get(ROUTER))


def _routed(spec: EventSpec) -> EventHandler:
    async def handle(call: EventCall) -> dict[str, Any] | None:
        router = router_of(call.session)
        if router is None:
            return await spec.handler(call)
        return await router.handle(spec, call)

    return handle


async def _on_disconnect(conn: Connection) -> None:
    router = router_of(conn.session)
    if router is not None:
        await router.disconnected(conn)


async def _on_rights_changed(conn: Connection) -> None:
    router = router_of(conn.session)
    if router is not None:
        await router.rights_changed(conn)


def routed(events: Events) -> Events:
    """``events`` with every ``live:*`` event routed to its session's owner (when the server runs a
    :class:`Router`), and the router told of disconnects and rights changes before the table's own hooks."""
    out = Events()
    for spec in events.specs.values():
        handler = _routed(spec) if spec.name.startswith("live:") else spec.handler
        out.on(spec.name, spec.payload)(handler)
    out.on_connect.extend(events.on_connect)
    out.on_disconnect.extend([_on_disconnect, *events.on_disconnect])
    out.on_rights_changed.extend([_on_rights_changed, *events.on_rights_changed])
    return out
