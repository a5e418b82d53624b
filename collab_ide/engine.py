"""``/yjs`` on a compiled data path (``STUDYHALL_YJS_ENGINE=c``): the y-websocket connections of this node
read, parsed, checked and forwarded by ``collab_ide/_engine.c`` on a thread of its own.

Why: on the Python path (:class:`collab_ide.websocket.TakeoverPeer`) every keystroke costs one turn of the
event loop, the frame parsing, the update check, three sends and the bookkeeping, about 35 µs of Python
per edit on top of the kernel's ~26 µs, where the y-websocket server spends ~89 µs in all
(``bench/RESULTS.md``). A relay that did nothing but forward frames still cost half of the Node server's
CPU on asyncio's loop, so no Python-side trimming could reach a third. Here the connection's bytes never
enter Python on the common path:

- The upgrade, the ticket and the workspace are checked as before, while the request is aiohttp's. Then
  the connection's descriptor is handed to the engine (a duplicate; aiohttp's transport is let go), with
  the 101 answer and the greeting (sync step 1, everyone's awareness) to write first.
- The engine's thread reads each connection, parses its frames with the node's limits (message size,
  fragments, masking, control frames; the close codes of :mod:`collab_ide.websocket`), answers pings and
  the client's close, and buffers what a client is sent (past ``STUDYHALL_WS_MAX_BUFFER`` unsent it is
  closed with 1013).
- A keystroke (an update of one of the two shapes editors send, from a connection that may edit, with
  nothing of its workspace waiting for Python) is checked in C against the document's state vector exactly
  as :func:`collab_ide.updates.check`'s short paths check it, and against the size caps' headroom, then
  written to the workspace's other connections at once, without the GIL. Python gets it in a batch
  (:meth:`Engine.drain`, woken through an eventfd): applied to the pycrdt document in one transaction per
  workspace, relayed to other nodes, queued for the Postgres log (:meth:`SharedDocument.apply_fast`).
- Everything else (sync steps, awareness, queries, other update shapes, a read-only connection's updates,
  a connection holding updates that wait for their dependencies) goes to Python as it came. After a sync
  message the workspace stays on that path, in order, until Python has handled it and renewed the engine's
  copy of the state vector and sizes (``settle``); awareness does not hold it (cursors are not part of the
  document). The :class:`~collab_ide.websocket.Session` decides, forwards and closes exactly as on the
  Python path, through :class:`EnginePeer`.

Order is kept per workspace: the fast path forwards only while nothing of the workspace waits for Python,
and Python applies the drained updates before it handles the messages that came after them, so a sync
step 1 is always answered from a document that has everything forwarded before it.

The engine is optional (built by ``scripts/setup`` with the other C extension); TLS connections, which
the engine cannot read, stay on the Python path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_websocket import WS_KEY

from collab_ide.document import SharedDocument
from collab_ide.documents import DocumentManager
from collab_ide.websocket import (
    CLOSE_GOING_AWAY,
    HoldLimits,
    Opened,
    Session,
    TakeoverPeer,
    open_connection,
    recheck_peer,
)
from realtime.fastws import BinarySockets, BinaryWebSocket, _Hijacked, upgrade_problem, ws_frame

log = logging.getLogger(__name__)

try:
    from collab_ide import _engine  # type: ignore[attr-defined]
except ImportError:  # not built (no C compiler or Python headers where it was installed)
    _engine = None

CLOSE_ABORT_S = 5.0


def available() -> bool:
    return _engine is not None


def compiled() -> Any:
    """The compiled module (``RuntimeError`` if it is not built)."""
    if _engine is None:
        raise RuntimeError("the compiled /yjs engine (collab_ide/_engine.c) is not built: run scripts/setup")
    return _engine


class _Let(asyncio.Protocol):
    """What aiohttp's transport talks to once the engine has the connection: nothing."""


class EnginePeer:
    """One client of a document whose connection the engine holds: what the document and its
    :class:`~collab_ide.websocket.Session` know of it (``send``, ``close``, its access)."""

    __slots__ = ("_can_edit", "_held", "awareness_ids", "conn", "core", "denied", "early", "manager", "session",
                 "sockets", "user", "user_id", "workspace_id")  # fmt: skip

    def __init__(self, sockets: EngineSockets, opened: Opened, hold: HoldLimits) -> None:
        self.sockets = sockets
        self.conn: int | None = None
        self.early: list[bytes] | None = []  # frames sent before the engine has the connection (the greeting)
        self.core = opened.core
        self.user = opened.user
        self.user_id = opened.user.id
        self.workspace_id = opened.workspace_id
        self._can_edit = opened.can_edit
        self._held = False
        self.awareness_ids: set[int] = set()
        self.denied = False
        self.manager = opened.manager
        self.session: Session | None = Session(opened.doc, self, opened.manager, hold)

    @property
    def can_edit(self) -> bool:
        return self._can_edit

    @can_edit.setter
    def can_edit(self, value: bool) -> None:
        self._can_edit = value
        self._tell()

    def _tell(self) -> None:
        """The engine takes this connection's updates on the fast path only while it may edit and holds
        nothing (held updates are applied in order, by Python)."""
        held = bool(self.session is not None and self.session.held)
        if self.conn is not None:
            self.sockets.engine.set_conn(self.conn, self._can_edit, held)
        self._held = held

    def send(self, frame: bytes) -> None:
        if self.early is not None:
            self.early.append(frame)
        elif self.conn is not None:
            self.sockets.engine.send(self.conn, frame)

    def close(self, code: int, reason: str) -> None:
        if self.conn is not None:
            self.sockets.engine.close(self.conn, code, reason)  # (cut to 123 bytes, whole characters, in C)

    async def recheck(self) -> None:
        await recheck_peer(self)

    def message_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        refused = session.receive(data)
        if refused is not None:
            self.close(*refused)
        elif bool(session.held) != self._held:
            self._tell()

    def connection_closed(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.leave()


class EngineSockets:
    """This node's engine, its connections and its rooms (one per loaded document with clients here).

    Args:
        max_buffer, max_message, max_fragments, heartbeat_s: as for :class:`realtime.fastws.BinarySockets`.
    """

    def __init__(self, max_buffer: int, max_message: int, max_fragments: int, heartbeat_s: float) -> None:
        if _engine is None:
            raise RuntimeError("the compiled /yjs engine (collab_ide/_engine.c) is not built: run scripts/setup")
        self.heartbeat_s = heartbeat_s
        self.fallback = BinarySockets(max_buffer, max_message, max_fragments, heartbeat_s)
        """Refusals (a close frame after the upgrade) and TLS connections stay on the Python path."""
        self.engine = _engine.Engine(max_message, max_buffer, max_fragments, CLOSE_ABORT_S)
        self.peers: dict[int, EnginePeer] = {}
        self.rooms: dict[int, SharedDocument] = {}
        self.room_of: dict[uuid.UUID, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pinger: asyncio.Task[None] | None = None
        self.emptied: asyncio.Event | None = None
        self.manager: DocumentManager | None = None

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.engine.fileno(), self._ready)
        self._pinger = asyncio.ensure_future(self._ping_all())

    # --- rooms ---------------------------------------------------------------------------------------

    def _sizes(self, doc: SharedDocument) -> tuple[int, int, int, int, bool]:
        sizes = doc.sizes
        return (
            sizes.limits.document_bytes,
            sizes.limits.file_bytes,
            sizes.size,
            sizes.largest,
            sizes.watching or sizes._shadow is not None,
        )

    def room(self, doc: SharedDocument) -> int:
        room = self.room_of.get(doc.workspace_id)
        if room is not None and self.rooms.get(room) is doc:
            return room
        if room is not None:  # the document was unloaded and loaded again
            self.engine.remove_room(room)
            self.rooms.pop(room, None)
        room = int(self.engine.add_room(doc.doc.get_state(), *self._sizes(doc)))
        self.rooms[room] = doc
        self.room_of[doc.workspace_id] = room
        doc.changed = lambda: self._settle(room, doc, 0)
        return room

    def unloaded(self, workspace_id: uuid.UUID) -> None:
        room = self.room_of.pop(workspace_id, None)
        if room is not None:
            doc = self.rooms.pop(room, None)
            if doc is not None:
                doc.changed = None
            self.engine.remove_room(room)

    def _settle(self, room: int, doc: SharedDocument, done: int) -> None:
        self.engine.settle(room, done, doc.doc.get_state(), *self._sizes(doc))

    # --- what the engine hands over ----------------------------------------------------------------

    def _ready(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.engine.fileno(), 8)
        self.drain()

    def drain(self) -> None:
        fast, items = self.engine.drain()
        now = time.monotonic()
        rooms, manager = self.rooms, self.manager
        for room, updates, size, adding in fast:
            doc = rooms.get(room)
            if doc is None:  # unloaded meanwhile (no clients were left to send them)
                continue
            try:
                doc.apply_fast(updates, size, adding, now)
            except Exception:
                log.exception("could not take the engine's updates to %s", doc.workspace_id)
            if manager is not None:
                manager.updated(doc)
        if not items:
            return
        done: dict[int, int] = {}
        for kind, conn, room, data in items:
            if kind == _engine.CLOSED:
                peer = self.peers.pop(conn, None)
                if peer is not None:
                    peer.conn = None
                    try:
                        peer.connection_closed()
                    except Exception:
                        log.exception("a /yjs connection to %s could not leave its document", peer.workspace_id)
                continue
            if kind == _engine.MESSAGE:  # (ASIDE: awareness, which the room's updates do not wait for)
                done[room] = done.get(room, 0) + 1
            peer = self.peers.get(conn)
            if peer is not None:
                peer.message_received(data)  # (it catches what its handling raises, and closes)
        for room, count in done.items():
            doc = rooms.get(room)
            if doc is not None:
                self._settle(room, doc, count)
        if not self.peers and self.emptied is not None:
            self.emptied.set()

    # --- connections -------------------------------------------------------------------------------

    def take(self, request: web.Request, opened: Opened, hold: HoldLimits) -> web.StreamResponse:
        """Answer the upgrade and hand the connection to the engine (or, over TLS, to the Python path)."""
        transport = request.transport
        protocol_ = request.protocol
        if transport is None or transport.is_closing():  # the client left while it was checked
            opened.manager.detach(opened.doc, EnginePeer(self, opened, hold))  # the document unloads as usual
            return _Hijacked()
        sock = transport.get_extra_info("socket")
        if transport.get_extra_info("sslcontext") is not None or sock is None:
            peer_ = TakeoverPeer(self.fallback, opened, hold)
            answer = peer_.take(request)
            if peer_.taken:
                opened.manager.attach(opened.doc, peer_)
            else:
                opened.manager.detach(opened.doc, peer_)
            return answer
        self.start()
        if self.manager is not opened.manager:
            self.manager = opened.manager
            opened.manager.on_unload.append(self.unloaded)
        accept = base64.b64encode(hashlib.sha1(request.headers["Sec-WebSocket-Key"].encode() + WS_KEY).digest())
        preface = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        tail: bytes = bytes(getattr(protocol_, "_message_tail", b"") or b"")
        fd = os.dup(sock.fileno())
        # aiohttp lets go of the connection: its transport is closed (the duplicate keeps the TCP connection)
        transport.pause_reading()
        protocol_.transport = None
        protocol_.connection_lost(None)
        transport.set_protocol(_Let())
        transport.abort()
        peer = EnginePeer(self, opened, hold)
        try:
            opened.manager.attach(opened.doc, peer)  # the greeting lands in peer.early
            early, peer.early = peer.early or [], None
            room = self.room(opened.doc)
        except BaseException:
            os.close(fd)
            peer.connection_closed()
            raise
        try:  # (from here the engine owns the descriptor, and closes it whatever happens)
            greeting = b"".join(ws_frame(f, 0x2) for f in early)
            conn = int(self.engine.add_conn(fd, room, opened.can_edit, preface + greeting, tail))
        except (OSError, MemoryError, KeyError):
            log.exception("the /yjs engine could not take a connection")
            peer.connection_closed()
            return _Hijacked()
        peer.conn = conn
        self.peers[conn] = peer
        return _Hijacked()

    async def _ping_all(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self.engine.ping_all()

    async def hang_up(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down", wait_s: float = 2.0
    ) -> None:
        """Close every connection with ``code`` and wait (at most ``wait_s``) for the clients' answers; the
        rest are aborted. Their documents have let them go when this returns."""
        await self.fallback.hang_up(code, reason, wait_s)
        if self._loop is None:
            return
        self.emptied = asyncio.Event()
        for conn in list(self.peers):
            self.engine.close(conn, code, reason)
        if self.peers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.emptied.wait(), wait_s)
        for conn in list(self.peers):
            self.engine.abort(conn)
        self.drain()
        self.emptied = None

    async def close(self) -> None:
        """:meth:`hang_up`, then the engine's thread stops (what it still held is handed over first)."""
        await self.hang_up()
        await self.fallback.close()
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None
        if self._loop is not None:
            self._loop.remove_reader(self.engine.fileno())
            self._loop = None
        self.engine.stop()
        self.drain()


def make_engine_handler(
    docs: Callable[[web.Application], DocumentManager], sockets: EngineSockets, hold: HoldLimits = HoldLimits()
) -> Any:
    """The aiohttp handler of ``/yjs/{workspace_id}`` on the engine: the checks run while the request is
    aiohttp's; then the connection is the engine's."""

    async def yjs_socket(request: web.Request) -> web.StreamResponse:
        problem = upgrade_problem(request)
        if problem is not None:
            return problem
        opened = await open_connection(request, docs)
        if not isinstance(opened, Opened):
            refused = BinaryWebSocket(sockets.fallback)
            answer = refused.take(request)
            refused.close(*opened)
            return answer
        return sockets.take(request, opened, hold)

    return yjs_socket


__all__ = ["EnginePeer", "EngineSockets", "available", "make_engine_handler"]
