"""The Socket.IO server: authentication at the handshake, the typed event dispatch, live notifications.

python-socketio (protocol v5, so any official client works) runs on the same aiohttp app and port at
``/socket.io/``. With ``STUDYHALL_REDIS_URL`` set its rooms fan out through Redis
(``AsyncRedisManager``), so an emit on any node reaches clients on every node. Every client→server
event goes through :meth:`SocketServer._dispatch`: payload validated against the event's pydantic model
(as JSON, strictly), caller known from the handshake, failures answered as error acks. Unknown events
get an error ack too; nothing a client sends can take the connection or the node down.

**Rights on open connections.** The caller's account (its platform role) is read at the handshake and
kept in the session, but never trusted past a change: when a ``rights:<user>`` event arrives (see
:mod:`realtime.rights`) the user's sessions on this node are marked stale at once, so the next event they
send re-reads the account before its handler runs, and the packages' ``rights_changed`` hooks then take
each connection out of whatever it may no longer follow (:meth:`SocketServer.apply_rights`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web
from pydantic import ValidationError

from core_api.auth import AUTH, current_principal, ended_sessions, principal_for
from core_api.context import CORE
from core_api.errors import AppError, ErrorCode
from core_api.events import Connection, EventCall, Events, EventSpec
from core_api.http import Principal
from core_api.settings import Settings
from realtime.engine import GuardedSocketIO, SessionGate
from realtime.fastws import DirectSockets, FastEmit, FastManager, FastRedisManager
from realtime.ordered import OrderedRooms
from realtime.origins import OriginPolicy

log = logging.getLogger(__name__)

MAX_PACKET_BYTES = 256 * 1024  # above the largest valid payload, so oversized strings get an error ack
ME_CHANGED = "me:changed"
"""s→c ``{id, email, display_name, role}``: the connection's account changed (a new platform role, or a new
display name) and the connection now acts with it."""
_SEEN = "realtime.rights_seen"
"""Session key: how many rights events for the user this connection has been told of."""
_READ = "realtime.rights_read"
"""Session key: the value of :data:`_SEEN` when the session's account was last read."""
_TOLD_ROLE = "realtime.told_role"
"""Session key: the platform role and display name the client last heard of (at the handshake, or in
``me:changed``)."""
# Binary attachments one Socket.IO packet may announce. Events here carry JSON (a binary one is answered
# invalid_input), so a few are plenty; python-socketio alone would wait for up to 10^10 of them.
MAX_ATTACHMENTS = 8


def error_ack(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code.value, "message": message}}


def client_manager(settings: Settings, *, write_only: bool = False) -> FastEmit:
    """Redis fan-out when scaled, in-process otherwise; both with the shared-frame room emit (``fastws``)."""
    if settings.redis_url is None:
        return FastManager()
    return FastRedisManager(settings.redis_url.get_secret_value(), channel="studyhall-socketio", write_only=write_only)


def external_emitter(settings: Settings) -> socketio.AsyncRedisManager:
    """A write-only manager for code outside the server (Celery workers): ``await m.emit(event, data, room=...)``."""
    if settings.redis_url is None:
        raise ValueError("emitting from outside the server needs STUDYHALL_REDIS_URL")
    manager = client_manager(settings, write_only=True)
    assert isinstance(manager, socketio.AsyncRedisManager)
    return manager


class SocketServer:
    """One app's Socket.IO server and the :class:`~core_api.events.Transport` the domain handlers use."""

    def __init__(self, app: web.Application, settings: Settings, events: Events) -> None:
        self.app = app
        self.events = events
        self.node_id = uuid.uuid4().hex[:12]
        self.sessions: dict[str, dict[str, Any]] = {}
        self.sids_by_user: dict[uuid.UUID, set[str]] = {}
        self._rights_events = 0  # rights events this node was told of, for anyone (see _connect)
        self.recheck_soon: Callable[[uuid.UUID], None] = lambda user_id: None
        """Set by :class:`realtime.rights.RightsWatch`: re-check a user's connections (see :meth:`_dispatch`)."""
        # App-scoped services each connection's session starts with (rooms' presence, under its own
        # key), so domain handlers reach them through ``call.session`` without importing the server.
        self.services: dict[str, Any] = {}
        self._cleanups: set[asyncio.Future[None]] = set()
        manager = client_manager(settings)
        # Sessions that have not logged in are capped and expire (realtime/engine.py).
        self.gate = SessionGate(
            settings.sio_anonymous_per_address, settings.sio_anonymous_max, settings.sio_connect_timeout_s
        )
        self.sio = GuardedSocketIO(
            async_mode="aiohttp",
            client_manager=manager,
            # Browsers may connect from this server's own origin and those of STUDYHALL_CORS_ORIGINS only.
            cors_allowed_origins=OriginPolicy(settings).engineio_check,
            max_http_buffer_size=MAX_PACKET_BYTES,
            ping_interval=settings.ping_interval_s,
            ping_timeout=settings.ping_timeout_s,
            logger=False,
            engineio_logger=False,
            gate=self.gate,
        )
        self.direct = DirectSockets(
            settings.ws_max_buffer,
            settings.ws_max_fragments,
            compress_min=settings.ws_compress_min_bytes,
            compress_level=settings.ws_compress_level,
            inflate_limit=MAX_PACKET_BYTES,
            fanout_writer=settings.ws_fanout_writer,
        )
        # chat:message in seq order on this node (realtime/ordered.py); the app names the event and its store.
        self.ordered = OrderedRooms(
            lambda event, room, data, skip: manager.emit_here(event, data, "/", room, skip_sid=skip or None),
            manager.room_has_members,
            manager.enter_here,
            gap_wait_s=settings.chat_gap_wait_s,
            check_s=settings.chat_position_check_s,
        )
        manager.order = self.ordered
        if not settings.ws_deflate:
            # Websockets on the direct writer (no per-connection queue and writer task), and room emits
            # writing one shared frame to each of them; see realtime/fastws.py.
            manager.direct = self.direct
            self.sio.eio._async = {**self.sio.eio._async, "websocket": self.direct.driver()}
        self.sio.attach(app)
        # Socket.IO packets are decoded in python-socketio's Engine.IO message handler; a malformed one
        # would log a traceback per packet. It costs the sender its connection and one line instead.
        self.sio.eio.on("message", self._eio_message)
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        for spec in events.specs.values():
            self.sio.on(spec.name, self._handler_for(spec))
        self.sio.on("*", self._unknown)

    async def _eio_message(self, eio_sid: str, data: Any) -> None:
        why = self._garbage(eio_sid, data)
        if why is None:
            try:
                await self.sio._handle_eio_message(eio_sid, data)
                return
            except Exception as exc:
                why = f"malformed packet ({type(exc).__name__})"
        log.warning("disconnecting Socket.IO client %s: %s", eio_sid, why)
        await self.sio.eio.end(eio_sid, self.sio.eio.reason.TRANSPORT_ERROR)

    def _garbage(self, eio_sid: str, data: Any) -> str | None:
        """Why a message cannot be Socket.IO in this place, if it cannot (before python-socketio reads it).

        Binary attachments follow their packet at once, and only they are binary: a text message while
        attachments are awaited would otherwise be swallowed as one, and so would every later event.
        """
        awaiting = eio_sid in self.sio._binary_packet
        if isinstance(data, bytes):
            return None if awaiting else "binary message where no attachment was announced"
        if awaiting:
            return "text message where a binary attachment was announced"
        if isinstance(data, str) and data[:1] in ("5", "6"):  # BINARY_EVENT, BINARY_ACK: "5<n>-..."
            count = data[1 : data.find("-")] if "-" in data else ""
            if not count.isdigit() or not 0 < int(count) <= MAX_ATTACHMENTS:
                return f"binary packet announcing {count[:12] or 'no'} attachments (at most {MAX_ATTACHMENTS})"
        return None

    async def close(self) -> None:
        """Stop python-socketio's background tasks (the ping service); call once the app shuts down."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        await self.direct.close()
        await self.gate.close()
        await self.sio.shutdown()

    # --- Transport ---------------------------------------------------------------------------

    async def emit(
        self, event: str, data: Any, *, to: str | list[str], skip_sid: str | list[str] | None = None
    ) -> None:
        await self.sio.emit(event, data, to=to, skip_sid=skip_sid)

    async def enter_room(self, sid: str, room: str) -> None:
        await self.sio.enter_room(sid, room)

    async def enter_room_at(self, sid: str, room: str, committed: int, after: int | None = None) -> int:
        return self.ordered.enter(sid, room, committed, after)

    async def leave_room(self, sid: str, room: str) -> None:
        await self.sio.leave_room(sid, room)

    async def disconnect(self, sid: str) -> None:
        await self.sio.disconnect(sid)

    def rooms_of(self, sid: str) -> list[str]:
        return [r for r in self.sio.rooms(sid) if r != sid]

    # --- connection lifecycle ------------------------------------------------------------------

    def _connection(self, sid: str) -> Connection | None:
        session = self.sessions.get(sid)
        if session is None:
            return None
        return Connection(sid, session["user"], self.app[CORE], self, session)

    async def _connect(self, sid: str, environ: Any = None, auth: Any = None, *_: Any) -> dict[str, Any] | None:
        if sid in self.sessions:
            # A client *event* named "connect" (python-socketio routes it to this handler), not a handshake.
            return error_ack(ErrorCode.INVALID_INPUT, "'connect' is a reserved event name")
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError(
                "send an access token as auth: {token}", {"code": "unauthorized"}
            )
        events_before = self._rights_events
        try:
            user = await principal_for(self.app[CORE], self.app[AUTH], token)
        except AppError as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.message, {"code": "unauthorized"}) from None
        # A rights event that came while the account was being read may be this user's: read it again
        # before the connection's first event.
        seen = 0 if self._rights_events == events_before else 1
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is not None:
            self.gate.authenticated(eio_sid)  # no longer counted or timed as an anonymous session
        self.sessions[sid] = {
            **self.services,
            "user": user,
            _SEEN: seen,
            _READ: 0,
            _TOLD_ROLE: (user.role, user.display_name),
        }
        self.sids_by_user.setdefault(user.id, set()).add(sid)
        await self.sio.enter_room(sid, f"user:{user.id}")
        conn = self._connection(sid)
        assert conn is not None
        for hook in self.events.on_connect:
            await hook(conn)
        return None

    async def _disconnect(self, sid: str, reason: Any = None, *_: Any) -> dict[str, Any] | None:
        if self.sio.manager.is_connected(sid, "/"):
            # A client *event* named "disconnect": a real disconnect is marked as pending before this runs.
            return error_ack(ErrorCode.INVALID_INPUT, "'disconnect' is a reserved event name")
        self._end_pending_poll(sid)
        conn = self._connection(sid)
        try:
            if conn is not None:
                # The hooks (leaving rooms and presence) run in a task of their own: the task that noticed
                # the disconnect may be cancelled under them (aiohttp cancels a request's handler when its
                # connection drops, if configured to), and half a cleanup would leave the user "present".
                cleanup = asyncio.ensure_future(self._run_disconnect_hooks(conn))
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)
                await asyncio.shield(cleanup)
        finally:
            session = self.sessions.pop(sid, None)
            if session is not None:
                self._forget_sid(session["user"].id, sid)
        return None

    def _forget_sid(self, user_id: uuid.UUID, sid: str) -> None:
        sids = self.sids_by_user.get(user_id)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self.sids_by_user[user_id]

    async def _run_disconnect_hooks(self, conn: Connection) -> None:
        for hook in self.events.on_disconnect:
            try:
                await hook(conn)
            except Exception:
                log.exception("disconnect hook failed for %s", conn.sid)

    def _end_pending_poll(self, sid: str) -> None:
        """Answer a long-polling client's waiting GET at once when its session ends.

        python-engineio leaves that request waiting until the ping timeout (about 30 s here), and the
        official clients wait for it before they call a disconnect done. An empty answer ends it now.
        """
        try:
            eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        except Exception:
            return
        socket = self.sio.eio.sockets.get(eio_sid) if eio_sid else None
        if socket is not None and not socket.upgraded and not socket.upgrading:
            socket.queue.put_nowait(None)

    # --- events --------------------------------------------------------------------------------

    def _handler_for(self, spec: EventSpec) -> Any:
        async def handle(sid: str, *args: Any) -> dict[str, Any]:
            return await self._dispatch(spec, sid, args[0] if args else None)

        return handle

    async def _dispatch(self, spec: EventSpec, sid: str, data: Any) -> dict[str, Any]:
        session = self.sessions.get(sid)
        if session is None:
            return error_ack(ErrorCode.UNAUTHORIZED, "not connected")
        seen = session[_SEEN]
        if seen != session[_READ]:
            # The user's rights changed since the account was read: act with what is stored now.
            held: Principal = session["user"]
            fresh = await current_principal(self.app[CORE], held.id)
            if fresh is None:
                await self.disconnect(sid)
                return error_ack(ErrorCode.UNAUTHORIZED, "the account no longer exists")
            if held.session_id is not None and await ended_sessions(self.app[CORE], {held.session_id}):
                await self.disconnect(sid)
                return error_ack(ErrorCode.UNAUTHORIZED, "this session was signed out; sign in again")
            session["user"], session[_READ] = dataclasses.replace(fresh, session_id=held.session_id), seen
        user: Principal = session["user"]
        try:
            return await self._run(spec, sid, session, user, data)
        finally:
            if session[_SEEN] != seen:
                # Rights changed while the handler ran: a re-check that started meanwhile may have missed
                # what it did (a room it was joining), so the connection is checked once more.
                self.recheck_soon(user.id)

    async def _run(
        self, spec: EventSpec, sid: str, session: dict[str, Any], user: Principal, data: Any
    ) -> dict[str, Any]:
        try:
            try:
                payload = spec.payload.model_validate_json(json.dumps(data if data is not None else {}), strict=True)
            except ValidationError as exc:
                first = exc.errors(include_url=False, include_input=False)[0]
                where = ".".join(str(p) for p in first["loc"]) or "payload"
                return error_ack(ErrorCode.INVALID_INPUT, f"{spec.name}: {where}: {first['msg']}")
            except (TypeError, ValueError):
                return error_ack(ErrorCode.INVALID_INPUT, f"{spec.name}: payload must be a JSON object")
            call = EventCall(sid, user, payload, self.app[CORE], self, session)
            result = await spec.handler(call)
            return {"ok": True, **(result or {})}
        except AppError as exc:
            return error_ack(exc.code, exc.message)
        except Exception:
            log.exception("event %s from %s failed", spec.name, sid)
            return error_ack(ErrorCode.INTERNAL, "internal error; it has been logged")

    async def _unknown(self, *args: Any) -> dict[str, Any]:
        # Called as (event, sid, *data) for unregistered events, and as (sid, *data) for an event named "*".
        event = args[0] if len(args) >= 2 and isinstance(args[1], str) and args[1] in self.sessions else "*"
        return error_ack(ErrorCode.INVALID_INPUT, f"unknown event {str(event)[:80]!r}")

    # --- rights ------------------------------------------------------------------------------------

    def mark_stale(self, user_id: uuid.UUID) -> None:
        """The user's rights changed: their sessions' next event re-reads the account first."""
        self._rights_events += 1
        for sid in self.sids_by_user.get(user_id, ()):
            session = self.sessions.get(sid)
            if session is not None:
                session[_SEEN] += 1

    def held_roles(self) -> dict[uuid.UUID, set[str]]:
        """The platform roles this node's connections act with, by user."""
        held: dict[uuid.UUID, set[str]] = {}
        for session in self.sessions.values():
            user: Principal = session["user"]
            held.setdefault(user.id, set()).add(user.role)
        return held

    def seen_marks(self, user_id: uuid.UUID) -> dict[str, int]:
        """How many rights events each of the user's sessions has been told of (taken before a re-read)."""
        return {sid: self.sessions[sid][_SEEN] for sid in self.sids_by_user.get(user_id, ()) if sid in self.sessions}

    async def apply_rights(self, user_id: uuid.UUID, principal: Principal | None, marks: dict[str, int]) -> None:
        """Give the user's sessions the account as re-read (``principal``; None: it is gone, so they are
        disconnected), then run the packages' ``rights_changed`` hooks on each.

        ``marks`` are :meth:`seen_marks` from before the account was read: a session told of a later
        change stays stale, so its next event reads the account again. A client whose role changed hears
        ``me:changed`` (once the hooks ran).
        """
        sids = list(self.sids_by_user.get(user_id, ()))
        # Connections made with a session's token end with it (signed out elsewhere, a password change).
        signed_in = {s["user"].session_id for sid in sids if (s := self.sessions.get(sid)) and s["user"].session_id}
        ended = await ended_sessions(self.app[CORE], signed_in) if principal is not None else set()
        for sid in sids:
            session = self.sessions.get(sid)
            if session is None:
                continue
            if principal is None or session["user"].session_id in ended:
                await self.disconnect(sid)
                continue
            mark = marks.get(sid)
            if mark is not None and mark >= session[_READ]:  # else its own read (an event's, the handshake's) is newer
                held = session["user"].session_id
                session["user"], session[_READ] = dataclasses.replace(principal, session_id=held), mark
            user: Principal = session["user"]
            conn = Connection(sid, user, self.app[CORE], self, session)
            for hook in self.events.on_rights_changed:
                try:
                    await hook(conn)
                except Exception:
                    log.exception("rights hook failed for %s", sid)
            if session[_TOLD_ROLE] != (user.role, user.display_name):
                session[_TOLD_ROLE] = (user.role, user.display_name)
                data = {"id": str(user.id), "email": user.email, "display_name": user.display_name, "role": user.role}
                await self.emit(ME_CHANGED, data, to=sid)

    # --- bus → clients -------------------------------------------------------------------------

    async def on_bus_event(self, topic: str, payload: dict[str, Any]) -> None:
        """Push domain events published after commit.

        - ``user:<id>``: notifications, to the user's personal room; ``{"event": name, "data": {...}}``
          is emitted as ``name`` there (for example ``execution:finished``).
        - ``room:<id>``: ``{"event": name, "data": {...}}`` is emitted as ``name`` to the Socket.IO room
          ``room:<id>`` (for example ``room:archived``).

        Either may name more Socket.IO rooms in ``"also_to"`` (a workspace's run channel,
        ``workspace:<id>``): the event goes to all of them at once, each connection getting it once.
        """
        if topic.startswith("room:"):
            event, data = payload.get("event"), payload.get("data")
            if isinstance(event, str) and isinstance(data, dict):
                await self.emit(event, data, to=recipients(topic, payload))
            else:
                log.warning("dropped a %s event without event/data: %r", topic, sorted(payload))
            return
        if not topic.startswith("user:"):
            return
        event, data = payload.get("event"), payload.get("data")
        if isinstance(event, str) and isinstance(data, dict):  # e.g. execution:finished
            await self.emit(event, data, to=recipients(topic, payload))
            return
        kind = payload.get("type")
        if kind == "notification":
            await self.emit("notification:new", payload["notification"], to=topic)
        elif kind == "notifications_read":
            await self.emit(
                "notification:read",
                {"notification_id": payload.get("notification_id"), "unread": payload.get("unread")},
                to=topic,
            )


def recipients(topic: str, payload: dict[str, Any]) -> str | list[str]:
    """The Socket.IO rooms a ``{"event", "data"}`` bus event goes to: its topic's, and any ``also_to``
    workspace run channels (only those: a bus payload never widens an event to other users' rooms)."""
    also = payload.get("also_to")
    extra = [r for r in also if isinstance(r, str) and r.startswith("workspace:")] if isinstance(also, list) else []
    return [topic, *extra] if extra else topic


SOCKETS = web.AppKey("sockets", SocketServer)
