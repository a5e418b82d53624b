"""``/yjs/{workspace_id}?ticket=...`` (or ``?token=``): the y-websocket endpoint.

The connection is checked (ticket or token, the workspace, the document loaded) while it is still an
HTTP request; then the upgrade is answered and the TCP connection taken from aiohttp
(:class:`realtime.fastws.BinaryWebSocket`, the takeover the Socket.IO websockets use): each client is
one :class:`TakeoverPeer`, the connection's protocol object, and an idle one holds no aiohttp request,
reader, writer or handler task. ``STUDYHALL_YJS_TAKEOVER=false`` serves it on aiohttp's
``WebSocketResponse`` instead (kept for one release, to compare; same behaviour and close codes).

The per-message path is kept short on purpose (it is where a Python server spends its time): each
complete frame is handled synchronously in the turn it arrived (no task, queue or future per message),
the protocol decoded by hand (:mod:`collab_ide.protocol`), the update applied to the pycrdt document,
and the received frame written unchanged to every other client's transport — no task or queue per
recipient, and one ``write`` per recipient per event-loop turn however many frames. A client whose
socket stops draining (more than ``STUDYHALL_WS_MAX_BUFFER`` bytes waiting) is disconnected (1013)
rather than allowed to hold memory or slow the others.

Close codes (the reason says more):

| code | when |
| --- | --- |
| 4401 | no ticket or token, or an invalid, expired or already used one (or the account no longer exists) |
| 4403 | the user's access was withdrawn while connected (a room kick or ban, a community left, a role lost) |
| 4404 | no such workspace, or one the user may not see |
| 4413 | an update that would make the workspace or one of its files larger than its cap (refused whole) |
| 1002 | a malformed or truncated message, or an update the CRDT cannot decode |
| 1008 | an update that depends on changes the server does not have, or deletes what it does not have (refused |
|      | whole: the CRDT would hold it in memory; a client that syncs first never sends one, and reconnects) |
| 1003 | a text frame or an unknown message type |
| 1009 | a message over ``STUDYHALL_COLLAB_MAX_MESSAGE_BYTES``, or in more than ``STUDYHALL_WS_MAX_FRAGMENTS`` frames |
| 1007 | a text frame that is not UTF-8 (1002 for frames that break RFC 6455) |
| 1013 | the client does not read fast enough |
| 1001 | the server is shutting down (clients reconnect, to another node when scaled) |
| 1011 | an unexpected error (logged) |

A member with read-only access gets the document and awareness and may send awareness (cursors), but
its updates are refused: never applied, forwarded or stored; it is told once with y-websocket's
"permission denied" auth message (at once when an open connection loses edit access: the room was
archived, a room role or the workspace access was lowered).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from collab_ide import protocol
from collab_ide.access import workspace_row
from collab_ide.document import InvalidUpdate, SharedDocument
from collab_ide.documents import DocumentManager
from collab_ide.protocol import Kind, ProtocolError
from collab_ide.sizes import TooLarge
from collab_ide.updates import LeftPending, MissingDependencies
from core_api.auth import AUTH, current_principal, principal_from_url
from core_api.context import CORE, Core
from core_api.errors import AppError
from core_api.http import Principal
from realtime.fastws import BinarySockets, BinaryWebSocket, upgrade_problem

log = logging.getLogger(__name__)

MAX_BUFFERED = 8 * 1024 * 1024
HEARTBEAT_S = 30.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_LARGE = 4413
CLOSE_PROTOCOL = 1002
CLOSE_OUT_OF_SYNC = 1008
CLOSE_UNSUPPORTED = 1003
CLOSE_TRY_AGAIN = 1013
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")
_BINARY_FIN = 0x82


class Connection(Protocol):
    """What a :class:`Session` and :func:`recheck_peer` need of a connection (on aiohttp's websocket, the
    takeover or the compiled engine)."""

    core: Core
    user: Principal
    user_id: uuid.UUID
    workspace_id: uuid.UUID
    can_edit: bool
    denied: bool
    awareness_ids: set[int]

    def send(self, frame: bytes) -> None: ...

    def close(self, code: int, reason: str) -> None: ...

    async def recheck(self) -> None: ...


async def recheck_peer(peer: Connection) -> None:
    """Read a connection's account and access again (never the ones it started with)."""
    user = await current_principal(peer.core, peer.user_id)
    if user is None:
        peer.close(CLOSE_UNAUTHORIZED, "the account no longer exists")
        return
    peer.user = user
    try:
        _, access = await workspace_row(peer.core.pool, user, peer.workspace_id)
    except AppError:
        peer.close(CLOSE_FORBIDDEN, "your access to this workspace was withdrawn")
        return
    downgraded = peer.can_edit and not access.edit
    peer.can_edit = access.edit
    peer.denied = downgraded
    if downgraded:  # told now, once, rather than at its next refused update
        peer.send(protocol.permission_denied("your access to this workspace is now read-only"))


class SocketPeer:
    """One websocket client of a document on aiohttp's ``WebSocketResponse`` (``STUDYHALL_YJS_TAKEOVER=false``).

    ``send`` writes binary frames straight to the transport, gathered per event-loop turn: the frames
    for this client that one read of the sender's socket produced leave in one ``write`` (one system
    call) at the end of the turn, instead of one each.
    """

    __slots__ = (
        "_loop", "_out", "awareness_ids", "can_edit", "closing", "core", "denied", "transport", "user", "user_id",
        "workspace_id", "ws",
    )  # fmt: skip

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: Any,
        core: Core,
        user: Principal,
        workspace_id: uuid.UUID,
        can_edit: bool,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.core = core
        self.user = user
        self.user_id = user.id
        self.workspace_id = workspace_id
        self.can_edit = can_edit
        self.awareness_ids: set[int] = set()
        self.denied = False
        self.closing: asyncio.Task[Any] | None = None
        self._out: list[bytes] | None = None
        self._loop = asyncio.get_running_loop()

    def send(self, frame: bytes) -> None:
        n = len(frame)
        # Server frames are unmasked: a 2-, 4- or 10-byte header, then the payload as it is.
        if n < 126:
            header = bytes((_BINARY_FIN, n))
        elif n < 65536:
            header = _LEN16.pack(_BINARY_FIN, 126, n)
        else:
            header = _LEN64.pack(_BINARY_FIN, 127, n)
        out = self._out
        if out is None:
            self._out = [header, frame]
            self._loop.call_soon(self._write)
        else:
            out.append(header)
            out.append(frame)

    def _write(self) -> None:
        out, self._out = self._out, None
        transport = self.transport
        if not out or self.ws.closed or transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            self.close(CLOSE_TRY_AGAIN, "not reading fast enough")
            return
        transport.write(b"".join(out))

    async def recheck(self) -> None:
        await recheck_peer(self)

    def close(self, code: int, reason: str) -> None:
        if self._out is not None:
            self._write()  # what was queued goes before the close frame
        if self.closing is None and not self.ws.closed:
            self.closing = asyncio.ensure_future(self.ws.close(code=code, message=reason.encode()[:120]))


@dataclass(frozen=True)
class HoldLimits:
    """How much of a client's updates that arrive ahead of what they depend on the connection keeps
    until it comes (``STUDYHALL_COLLAB_HELD_*``).

    A client that reconnects sends what it types at once, while its sync step 2 (which carries what
    the server lacks, after a node died say) is one round trip away; a client whose edits were refused
    while it was read-only continues from them once it may edit. Such an update is held by the
    connection, counted, and applied as soon as it can be, in order; when the connection starts to hold,
    the server sends it a sync step 1, which a y-protocols client answers with everything the server
    lacks. Past either limit, or if what it waits for does not come in time, the connection is closed
    with 1008 and what it held is dropped.

    Args:
        max_bytes: updates one connection may hold at once.
        timeout_s: how long the oldest may wait.
    """

    max_bytes: int = 64 * 1024
    timeout_s: float = 10.0


class Session:
    """What one connection's messages do; handlers are looked up by message kind in :data:`HANDLERS`.

    (A class-level table rather than a dict of bound methods on the instance: that would be a reference
    cycle keeping the session, and through it the document, alive until the cyclic GC runs.)
    """

    __slots__ = ("_held_timer", "doc", "docs", "held", "held_bytes", "hold_limits", "peer")

    def __init__(
        self,
        doc: SharedDocument,
        peer: Connection,
        docs: DocumentManager,
        hold: HoldLimits = HoldLimits(),
    ):
        self.doc = doc
        self.peer = peer
        self.docs = docs
        self.hold_limits = hold
        self.held: list[bytes] = []
        """Updates that wait for what they depend on, in the order they came (their frames are made again)."""
        self.held_bytes = 0
        self._held_timer: asyncio.TimerHandle | None = None

    def handle(self, frame: bytes) -> tuple[int, str] | None:
        """One binary message; the close code and reason if the connection must end for it."""
        try:
            kind, payload = protocol.decode(frame)
            HANDLERS[kind](self, payload, frame)
        except ProtocolError as exc:
            return (CLOSE_UNSUPPORTED if exc.unknown_type else CLOSE_PROTOCOL), str(exc)
        except InvalidUpdate:
            return CLOSE_PROTOCOL, "the update could not be decoded"
        except MissingDependencies as exc:  # refused whole: the CRDT would have held it in memory
            if isinstance(exc, LeftPending):
                log.error("closing a /yjs connection to %s: %s", self.doc.workspace_id, exc)
            return CLOSE_OUT_OF_SYNC, "the update depends on changes the server does not have"
        except TooLarge as exc:  # refused whole: nothing applied, forwarded or stored
            return CLOSE_TOO_LARGE, str(exc)
        return None

    def receive(self, frame: bytes) -> tuple[int, str] | None:
        r""":meth:`handle`, with an unexpected failure logged and answered with 1011 rather than taking the
        node (pycrdt's Rust panics are ``BaseException``\ s)."""
        try:
            return self.handle(frame)
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            log.exception("yjs connection to %s failed", self.doc.workspace_id)
            return CLOSE_INTERNAL, "internal error; it has been logged"

    def leave(self) -> None:
        """The connection ended: it stops holding updates and leaves its document."""
        self.end()
        self.docs.detach(self.doc, self.peer)

    def end(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None

    async def run(self, ws: web.WebSocketResponse) -> None:
        """The message loop on aiohttp's websocket (``STUDYHALL_YJS_TAKEOVER=false``)."""
        try:
            while True:
                msg = await ws.receive()
                if msg.type is WSMsgType.BINARY:
                    refused = self.handle(msg.data)
                    if refused is not None:
                        await ws.close(code=refused[0], message=_reason(refused[1]))
                        return
                elif msg.type is WSMsgType.TEXT:
                    await ws.close(code=CLOSE_UNSUPPORTED, message=b"y-websocket messages are binary")
                    return
                else:  # close, closing, closed, error (aiohttp already closed it, e.g. 1009 for a big message)
                    return
        finally:
            self.end()

    def on_step1(self, state_vector: bytes, frame: bytes) -> None:
        self.peer.send(self.doc.answer_step1(state_vector))

    def on_step2(self, update: bytes, frame: bytes) -> None:
        if update == protocol.EMPTY_UPDATE:
            return
        # Other clients get it as a plain update: a step 2 would tell them they were in sync.
        self.on_update(update, protocol.update_message(update))

    def on_update(self, update: bytes, frame: bytes) -> None:
        if not self.peer.can_edit:
            self.refuse()
            return
        now = time.monotonic()
        try:
            self.doc.apply(update, frame, self.peer, now)
        except MissingDependencies as exc:
            if isinstance(exc, LeftPending):
                raise
            self.hold(update)
            return
        self.docs.updated(self.doc)
        if self.held:
            self.apply_held(now)

    def hold(self, update: bytes) -> None:
        """Keep an update that waits for what it depends on; :class:`MissingDependencies` past the limits."""
        if self.held_bytes + len(update) > self.hold_limits.max_bytes:
            raise MissingDependencies("too much waits for changes the server does not have")
        if not self.held:
            self._held_timer = asyncio.get_running_loop().call_later(self.hold_limits.timeout_s, self._held_expired)
            self.peer.send(protocol.sync_step1(self.doc.doc.get_state()))  # "send me what I lack"
        self.held.append(update)
        self.held_bytes += len(update)

    def _held_expired(self) -> None:
        self._held_timer = None
        if self.held:
            self.peer.close(CLOSE_OUT_OF_SYNC, "the update depends on changes the server does not have")

    def apply_held(self, now: float) -> None:
        """Apply, in order, the held updates whose dependencies have come (as many rounds as it takes)."""
        while self.held:
            waiting: list[bytes] = []
            for update in self.held:
                try:
                    self.doc.apply(update, protocol.update_message(update), self.peer, now)
                except MissingDependencies as exc:
                    if isinstance(exc, LeftPending):
                        raise
                    waiting.append(update)
                    continue
                self.held_bytes -= len(update)
                self.docs.updated(self.doc)
            if len(waiting) == len(self.held):
                break
            self.held = waiting
        if not self.held and self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None

    def on_awareness(self, payload: bytes, frame: bytes) -> None:
        self.doc.client_awareness(self.peer, payload, frame)

    def on_query(self, payload: bytes, frame: bytes) -> None:
        self.peer.send(self.doc.awareness_frame())

    def refuse(self) -> None:
        if not self.peer.denied:
            self.peer.denied = True
            self.peer.send(protocol.permission_denied("read-only access: your changes are not accepted"))


HANDLERS: dict[Kind, Callable[[Session, bytes, bytes], None]] = {
    Kind.SYNC_STEP1: Session.on_step1,
    Kind.SYNC_STEP2: Session.on_step2,
    Kind.UPDATE: Session.on_update,
    Kind.AWARENESS: Session.on_awareness,
    Kind.AWARENESS_QUERY: Session.on_query,
}


def _reason(text: str) -> bytes:
    """A close reason: at most 120 bytes, and still UTF-8."""
    return text.encode()[:120].decode(errors="ignore").encode()


async def _refuse(ws: web.WebSocketResponse, code: int, reason: str) -> web.WebSocketResponse:
    await ws.close(code=code, message=_reason(reason))
    return ws


class Opened:
    """A connection's checks passed: who it is, its access and its document."""

    __slots__ = ("can_edit", "core", "doc", "manager", "user", "workspace_id")

    def __init__(
        self, core: Core, manager: DocumentManager, user: Principal, workspace_id: uuid.UUID, can_edit: bool,
        doc: SharedDocument,
    ) -> None:  # fmt: skip
        self.core = core
        self.manager = manager
        self.user = user
        self.workspace_id = workspace_id
        self.can_edit = can_edit
        self.doc = doc


async def open_connection(
    request: web.Request, docs: Callable[[web.Application], DocumentManager]
) -> Opened | tuple[int, str]:
    """Check a ``/yjs`` request (ticket or token, the workspace) and load its document; or the close code
    and reason to refuse it with."""
    app = request.app
    try:
        workspace_id = uuid.UUID(request.match_info["workspace_id"])
    except ValueError:
        return CLOSE_NOT_FOUND, "workspace not found"
    if not (request.query.get("ticket") or request.query.get("token")):
        return CLOSE_UNAUTHORIZED, "send a ticket as ?ticket= or an access token as ?token="
    core = app[CORE]
    manager = docs(app)
    try:
        user = await principal_from_url(core, app[AUTH], request.query)
        _, access = await workspace_row(core.pool, user, workspace_id)
        doc = await manager.open(workspace_id)
    except AppError as exc:
        return (CLOSE_UNAUTHORIZED if exc.status == 401 else CLOSE_NOT_FOUND), exc.message
    except Exception:  # the database is unreachable, say: the client retries with backoff
        log.exception("could not open the document of workspace %s", workspace_id)
        return CLOSE_INTERNAL, "internal error; it has been logged"
    if doc is None:
        return CLOSE_NOT_FOUND, "workspace not found"
    return Opened(core, manager, user, workspace_id, access.edit, doc)


def make_handler(
    docs: Callable[[web.Application], DocumentManager], max_message_bytes: int, hold: HoldLimits = HoldLimits()
) -> Any:
    """The aiohttp handler of ``/yjs/{workspace_id}`` on aiohttp's websocket; ``docs`` finds the app's manager."""

    async def yjs_socket(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=max_message_bytes, compress=False, heartbeat=HEARTBEAT_S)
        await ws.prepare(request)
        opened = await open_connection(request, docs)
        if not isinstance(opened, Opened):
            return await _refuse(ws, *opened)
        doc, manager = opened.doc, opened.manager
        peer = SocketPeer(ws, request.transport, opened.core, opened.user, opened.workspace_id, opened.can_edit)
        manager.attach(doc, peer)
        try:
            await Session(doc, peer, manager, hold).run(ws)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # pycrdt's Rust panics are BaseExceptions: one client must not take the node
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            log.exception("yjs connection to %s failed", opened.workspace_id)
            await ws.close(code=CLOSE_INTERNAL, message=b"internal error; it has been logged")
        finally:
            manager.detach(doc, peer)
        return ws

    return yjs_socket


# --- on the connection takeover (the default) ------------------------------------------------------


class TakeoverPeer(BinaryWebSocket):
    """One client of a document: its connection's protocol object (frames in and out, see
    :class:`~realtime.fastws.BinaryWebSocket`), its access, and its :class:`Session`."""

    __slots__ = ("awareness_ids", "can_edit", "core", "denied", "manager", "session", "user", "user_id",
                 "workspace_id")  # fmt: skip

    def __init__(self, registry: BinarySockets, opened: Opened, hold: HoldLimits) -> None:
        super().__init__(registry)
        self.core = opened.core
        self.user = opened.user
        self.user_id = opened.user.id
        self.workspace_id = opened.workspace_id
        self.can_edit = opened.can_edit
        self.awareness_ids: set[int] = set()
        self.denied = False
        self.manager = opened.manager
        self.session: Session | None = Session(opened.doc, self, opened.manager, hold)

    async def recheck(self) -> None:
        await recheck_peer(self)

    def message_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        refused = session.receive(data)
        if refused is not None:
            self.close(*refused)

    def connection_closed(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.leave()


def make_takeover_handler(
    docs: Callable[[web.Application], DocumentManager], sockets: BinarySockets, hold: HoldLimits = HoldLimits()
) -> Any:
    """The aiohttp handler of ``/yjs/{workspace_id}`` on the connection takeover: the checks run while
    the request is aiohttp's; then the connection is this node's :class:`TakeoverPeer`."""

    async def yjs_socket(request: web.Request) -> web.StreamResponse:
        problem = upgrade_problem(request)
        if problem is not None:
            return problem
        opened = await open_connection(request, docs)
        if not isinstance(opened, Opened):
            refused = BinaryWebSocket(sockets)
            answer = refused.take(request)
            refused.close(*opened)
            return answer
        peer = TakeoverPeer(sockets, opened, hold)
        answer = peer.take(request)
        if peer.taken:
            opened.manager.attach(opened.doc, peer)  # greets it: sync step 1 and everyone's awareness
        else:  # the client left while it was checked: the document unloads as usual
            opened.manager.detach(opened.doc, peer)
        return answer

    return yjs_socket
