"""Room broadcasts that encode a packet once and write the same websocket frame to every local client.

python-socketio, as it comes, sends a room broadcast by starting one asyncio task per recipient; each
task puts the packet on that client's Engine.IO queue, and each client's writer task wakes up, encodes
the packet again and writes it. That per-recipient work costs 60–100 µs of CPU per delivery, five to
seven times what Node's ``socket.io`` spends (``../shared/PERFORMANCE.md``). Two pieces here remove it
without changing a byte on the wire:

- :class:`DirectWebSocket` replaces python-engineio's aiohttp websocket driver. It runs the same
  Engine.IO websocket session (including the polling → websocket upgrade), but once a connection is on
  the websocket its packets are written straight to the TCP transport as complete frames, synchronously
  and in call order: the per-connection queue and writer task are gone. A client whose unsent data
  passes ``max_buffer`` bytes (it stopped reading) is cut off rather than allowed to grow the server's
  memory without bound.
- :class:`FastEmit` is mixed into the Socket.IO client manager: a room emit without an ack callback
  encodes the Socket.IO packet, the Engine.IO packet and the websocket frame once, then writes that frame
  to each recipient's transport in one loop. Recipients still on HTTP long-polling (or with per-message
  deflate, see below) get the packet through Engine.IO's own queue, one after the other, no tasks.

Per-message deflate is declined by default (``STUDYHALL_WS_DEFLATE=false``): a compressed frame differs
per connection (each has its own deflate context), so it cannot be shared; accepting it made every
delivery cost about 30% more CPU and every connection about 135 KB more memory for chat-sized messages
that barely compress. Node's ``socket.io`` declines it by default too. With the setting on, connections
that negotiate deflate use python-engineio's stock path.

This relies on python-engineio internals (``AsyncSocket`` attributes and its upgrade handshake), so
``pyproject.toml`` pins python-engineio to the minor versions it was checked against; the tests that
drive the server with the official ``socket.io-client`` (websocket, and polling upgraded to websocket)
guard it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import WSMsgType, web
from engineio import packet as eio_packet
from socketio import packet as sio_packet

log = logging.getLogger(__name__)

_OP_TEXT = 0x1
_OP_BINARY = 0x2


def ws_frame(payload: bytes, opcode: int = _OP_TEXT) -> bytes:
    """One complete, unmasked (server → client), uncompressed websocket frame."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def eio_frame(pkt: eio_packet.Packet) -> bytes:
    encoded = pkt.encode()
    if isinstance(encoded, bytes):
        return ws_frame(encoded, _OP_BINARY)
    return ws_frame(encoded.encode(), _OP_TEXT)


class _Drained:
    """Stands in for an Engine.IO socket's queue once its packets go straight to the websocket.

    An idle ``asyncio.Queue`` holds three deques, about 2.3 KB per connection; nothing is queued any more,
    and the only caller left, ``AsyncSocket.close``, just joins it.
    """

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    def put_nowait(self, item: Any) -> None:
        pass

    async def put(self, item: Any) -> None:
        pass

    def get_nowait(self) -> Any:
        raise asyncio.QueueEmpty

    def task_done(self) -> None:
        pass

    async def join(self) -> None:
        pass


DRAINED = _Drained()
_ENVIRON_KEPT = ("REMOTE_ADDR", "PATH_INFO", "QUERY_STRING", "HTTP_X_FORWARDED_FOR", "aiohttp.request")
PING_FRAME = ws_frame(b"2")


class DirectSockets:
    """The connections of one server that are on a direct websocket, by Engine.IO sid.

    It also pings them: one task for all, every ping interval, sends Engine.IO's PING to each connection
    that answered the last one (python-engineio would start one task per connection per ping). Unanswered
    pings are still judged by python-engineio's own service task.
    """

    def __init__(self, max_buffer: int) -> None:
        self.max_buffer = max_buffer
        self.by_eio_sid: dict[str, DirectWebSocket] = {}
        self.slow_consumers_cut = 0
        self._pinger: asyncio.Task[None] | None = None

    def attach(self, ws: DirectWebSocket) -> None:
        self.by_eio_sid[ws.socket.sid] = ws
        if self._pinger is None:
            self._pinger = asyncio.ensure_future(self._ping_all(float(ws.server.ping_interval)))

    async def _ping_all(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            now = time.time()
            for ws in list(self.by_eio_sid.values()):
                socket = ws.socket
                if socket.last_ping is None and not socket.closing and not socket.closed:
                    socket.last_ping = now
                    ws.write(PING_FRAME)

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None

    def driver(self) -> Callable[[Any, Any], DirectWebSocket]:
        """The class-like factory python-engineio calls as ``_async['websocket'](handler, server)``."""

        def make(handler: Any, server: Any) -> DirectWebSocket:
            return DirectWebSocket(handler, server, self)

        return make


class DirectWebSocket:
    """python-engineio's websocket transport for aiohttp, writing frames straight to the transport."""

    def __init__(self, handler: Any, server: Any, registry: DirectSockets) -> None:
        # ``handler`` is the bound ``AsyncSocket._websocket_handler`` of the Engine.IO socket.
        self.socket: Any = handler.__self__
        self.server = server
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.ws: web.WebSocketResponse | None = None
        self._closer: asyncio.Task[Any] | None = None

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        ws = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
        await ws.prepare(request)
        self.ws = ws
        self.transport = request.transport
        # python-socketio keeps this environ for the connection's lifetime (``sio.environ``): every request
        # header as a WSGI key. Nothing reads them after the handshake, so keep what identifies the client.
        kept = {k: environ[k] for k in _ENVIRON_KEPT if k in environ}
        environ.clear()
        environ.update(kept)
        try:
            await self._session()
        finally:
            self.registry.by_eio_sid.pop(self.socket.sid, None)
        return ws

    # --- writing ---------------------------------------------------------------------------------

    def write(self, frame: bytes) -> bool:
        """Write one complete frame; ``False`` if the connection is gone (or was just cut off)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(frame)
        if transport.get_write_buffer_size() > self.registry.max_buffer:
            self.registry.slow_consumers_cut += 1
            log.warning(
                "cut off Engine.IO client %s: %d bytes unsent (it stopped reading)",
                self.socket.sid,
                transport.get_write_buffer_size(),
            )
            transport.abort()
            return False
        return True

    async def send_packet(self, pkt: eio_packet.Packet) -> None:
        """Replaces ``AsyncSocket.send`` once the connection is on this websocket."""
        socket = self.socket
        if socket.closed or not await socket.check_ping_timeout():
            return
        self.write(eio_frame(pkt))
        if pkt.packet_type == eio_packet.CLOSE and self.ws is not None and self._closer is None:
            # The server closes this session: close the websocket too instead of waiting for the client.
            self._closer = asyncio.ensure_future(self.ws.close())

    # --- the Engine.IO websocket session -----------------------------------------------------------

    async def _receive(self) -> str | bytes | None:
        assert self.ws is not None
        timeout = self.server.ping_interval + self.server.ping_timeout
        try:
            msg = await self.ws.receive(timeout=timeout)
        except (TimeoutError, RuntimeError):
            return None
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return None
        data: str | bytes = msg.data
        return data

    async def _upgrade(self) -> bool:
        """The polling → websocket upgrade handshake (``2probe`` / ``3probe`` / ``5``), as Engine.IO has it."""
        socket = self.socket
        socket.upgrading = True
        try:
            data = await self._receive()
            probe = eio_packet.Packet(encoded_packet=data) if data is not None else None
            if probe is None or probe.packet_type != eio_packet.PING or probe.data != "probe":
                return False
            self.write(eio_frame(eio_packet.Packet(eio_packet.PONG, data="probe")))
            await socket.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending long-poll
            data = await self._receive()
            upgrade = eio_packet.Packet(encoded_packet=data) if data is not None else None
            if upgrade is None or upgrade.packet_type != eio_packet.UPGRADE:
                return False
            socket.upgraded = True
            return True
        finally:
            socket.upgrading = False

    def _attach(self) -> bool:
        """Flush what waits in the Engine.IO queue, then take over the socket's sends."""
        socket = self.socket
        while True:
            try:
                pkt = socket.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            socket.queue.task_done()
            if pkt is None:  # the session is being torn down
                return False
            self.write(eio_frame(pkt))
        socket.send = self.send_packet
        socket.schedule_ping = self._pong
        socket.queue = DRAINED
        self.registry.attach(self)
        return True

    def _pong(self) -> None:
        """Replaces ``AsyncSocket.schedule_ping``: the PONG arrived; the shared pinger sends the next PING."""
        self.socket.last_ping = None

    async def _session(self) -> None:
        socket = self.socket
        if socket.connected:
            if not await self._upgrade():
                return
        else:
            socket.connected = True
            socket.upgraded = True
        if not self._attach():
            return
        try:
            while True:
                data = await self._receive()
                if data is None:
                    break
                if len(data) > self.server.max_http_buffer_size:
                    break
                try:
                    pkt = eio_packet.Packet(encoded_packet=data)
                except Exception as exc:  # not Engine.IO at all: a broken or hostile client
                    log.warning("closing Engine.IO client %s: malformed packet (%s)", socket.sid, type(exc).__name__)
                    break
                try:
                    await socket.receive(pkt)
                except socketio.exceptions.SocketIOError:
                    continue
                except Exception as exc:  # engineio's own exceptions, and anything a handler let escape
                    if type(exc).__name__ == "SocketIsClosedError":
                        break
                    if type(exc).__name__ != "UnknownPacketError":
                        log.exception("Engine.IO receive error on %s", socket.sid)
        finally:
            self.registry.by_eio_sid.pop(socket.sid, None)
            if self.ws is not None and not self.ws.closed:
                await self.ws.close()
            await socket.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)


class FastEmit(socketio.AsyncManager):  # type: ignore[misc]
    """A client manager whose room emits write one shared frame to every local direct websocket."""

    direct: DirectSockets

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        direct = getattr(self, "direct", None)
        if callback is not None or direct is None:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kwargs)
            return
        room = to or room
        if namespace not in self.rooms:
            return
        if isinstance(data, tuple):
            args = list(data)
        elif data is not None:
            args = [data]
        else:
            args = []
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args]).encode()
        if isinstance(encoded, list):  # binary attachments: several Engine.IO packets; rare, keep it simple
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kwargs)
            return
        pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        frame = eio_frame(pkt)
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        by_eio_sid = direct.by_eio_sid
        queued: list[str] = []
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            ws = by_eio_sid.get(eio_sid)
            if ws is None:
                queued.append(eio_sid)
            elif not ws.socket.closed:
                ws.write(frame)
        for eio_sid in queued:
            await self.server._send_eio_packet(eio_sid, pkt)


class FastManager(FastEmit):
    """The in-process manager (no Redis) with the shared-frame room emit."""


class FastRedisManager(socketio.AsyncRedisManager, FastEmit):  # type: ignore[misc]
    """The Redis manager: emits are published as before; each node's local delivery is :class:`FastEmit`'s."""
