"""Room broadcasts that encode a packet once and write the same websocket frame to every local client.

python-socketio, as it comes, sends a room broadcast by starting one asyncio task per recipient; each
task puts the packet on that client's Engine.IO queue, and each client's writer task wakes up, encodes
the packet again and writes it. That per-recipient work costs 60–100 µs of CPU per delivery, five to
seven times what Node's ``socket.io`` spends (``../shared/PERFORMANCE.md``). Two pieces here remove it
without changing a byte on the wire:

- :class:`DirectWebSocket` replaces python-engineio's aiohttp websocket driver. It answers the upgrade
  request itself and then takes the TCP connection from aiohttp: it becomes the transport's protocol,
  parses the client's frames (with wsproto, bounded per frame, per message and per turn of the loop) and
  writes complete frames straight to the transport, synchronously and in call order. It runs the same
  Engine.IO websocket session (including the polling → websocket upgrade), but an idle connection holds
  no aiohttp request, parser, response, reader, writer, queue or task: 7 KB per idle connection instead
  of 23.5 KB (``bench/RESULTS.md``). Messages from the client are handed to Engine.IO in order by a task
  that exists only while messages wait. A client whose unsent data passes ``max_buffer`` bytes (it
  stopped reading) is cut off rather than allowed to grow the server's memory without bound; aiohttp's
  shutdown no longer sees these connections, so the app closes them on shutdown
  (:meth:`DirectSockets.hang_up`).
- :class:`FastEmit` is mixed into the Socket.IO client manager: a room emit without an ack callback
  encodes the Socket.IO packet, the Engine.IO packet and the websocket frame once, then writes that frame
  to each recipient's transport in one loop. Recipients still on HTTP long-polling (or with per-message
  deflate, see below) get the packet through Engine.IO's own queue, one after the other, no tasks.

- :class:`BinaryWebSocket` is the same takeover for a binary message protocol of the app's own
  (``/yjs``, the y-websocket protocol): the same handshake, frame writing, bounded parsing, ``max_buffer``
  cut-off and ping/close handling, with each complete message handed to a synchronous method in the turn
  it arrived; :class:`BinarySockets` holds one endpoint's connections (a pinger for all, closing them on
  shutdown). It declines per-message deflate.

Per-message deflate (RFC 7692) is taken **without context takeover** in both directions: the server
answers a client's ``permessage-deflate`` offer with ``server_no_context_takeover;
client_no_context_takeover``, so every compressed message stands alone. That makes a compressed frame
the same for every connection: a room emit of at least ``STUDYHALL_WS_COMPRESS_MIN_BYTES`` (1 KB) is
compressed once and that one frame is written to every connection that negotiated deflate (a
leaderboard push of ~45 KB leaves as ~5 KB: a tenth of the bytes to write, once per subscriber), and a
connection keeps no compressor or inflater between messages (no memory per connection; a
context-keeping deflate cost about 135 KB per connection and 30% more CPU per chat-sized delivery).
Smaller messages, the chat and presence traffic, go out uncompressed (each message says whether it is
compressed). What a client sends compressed is inflated in bounded steps: never more than the Engine.IO
packet limit per message, so a small "deflate bomb" costs its sender the connection (1009) and the
server at most one packet's worth of inflating. ``STUDYHALL_WS_COMPRESS_MIN_BYTES=0`` declines deflate.
``STUDYHALL_WS_DEFLATE=true`` instead hands deflating connections to python-engineio's stock path
(context takeover, per-connection frames).

This relies on python-engineio internals (``AsyncSocket`` attributes and its upgrade handshake), on
aiohttp's request handler letting go of a connection (``transport`` cleared, ``connection_lost``) and on
a look into wsproto's frame decoder (with a safe fallback), so ``pyproject.toml`` pins python-engineio,
aiohttp and wsproto to the minor versions they were checked against; the tests that drive the server
with the official ``socket.io-client`` (websocket, and polling upgraded to websocket) and
``tests/test_websocket_frames.py`` (RFC 6455, case by case) guard it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import logging
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import web
from aiohttp._websocket.helpers import websocket_mask as _websocket_mask
from aiohttp.http_websocket import WS_KEY
from engineio import packet as eio_packet
from socketio import packet as sio_packet
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, TextMessage
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from realtime.ordered import OrderedRooms
from realtime.sendmany import SendFrame, direct_transport, finish, pick_writer

log = logging.getLogger(__name__)

_OP_TEXT = 0x1
_OP_BINARY = 0x2


def ws_frame(payload: bytes, opcode: int = _OP_TEXT, compressed: bool = False) -> bytes:
    """One complete, unmasked (server → client) websocket frame; ``compressed`` sets RSV1 (RFC 7692)."""
    n = len(payload)
    first = 0xC0 | opcode if compressed else 0x80 | opcode
    if n < 126:
        header = struct.pack("!BB", first, n)
    elif n < 65536:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


_SYNC_TAIL = b"\x00\x00\xff\xff"


def deflate_frame(payload: bytes, opcode: int = _OP_TEXT, level: int = 1) -> bytes | None:
    """``payload`` as one compressed frame that any permessage-deflate peer decodes (RFC 7692, 7.2.1:
    a raw DEFLATE stream ended by a sync flush, its last four bytes taken off), with no reference to an
    earlier message; None when compressing does not make it smaller.

    The window and the compressor's memory are sized to the message (a 256 KB compressor costs more to
    set up than a 1 KB message takes to compress); a smaller window is always valid for the peer.
    """
    n = len(payload)
    bits = min(15, max(9, n.bit_length()))
    c = zlib.compressobj(level, zlib.DEFLATED, -bits, 8 if n > 16384 else 5)
    body = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    if body.endswith(_SYNC_TAIL):
        body = body[:-4]
    if len(body) >= n:
        return None
    return ws_frame(body, opcode, compressed=True)


_DEFLATE = "permessage-deflate"
DEFLATE_ANSWER = (
    b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
)


def takes_deflate(offers: list[str]) -> bool:
    """Whether one of a client's ``permessage-deflate`` offers (RFC 7692, section 7.1) can be accepted as
    this server accepts it: no context takeover either way, and a server window of 15 bits. An offer with
    an unknown or repeated parameter, or a bad value, is declined; so is one that limits the server's
    window (the shared frames are made once for every connection)."""
    for offer in ",".join(offers).split(","):
        name, *params = (part.strip() for part in offer.split(";"))
        if name.lower() != _DEFLATE:
            continue
        seen: set[str] = set()
        for param in params:
            key, eq, value = param.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key in seen:
                break
            seen.add(key)
            if key in ("server_no_context_takeover", "client_no_context_takeover"):
                if eq:
                    break
            elif key == "client_max_window_bits":
                if eq and not (value.isdigit() and 8 <= int(value) <= 15):
                    break
            elif key == "server_max_window_bits":
                if value != "15":
                    break
            else:
                break
        else:
            return True
    return False


class BoundedInflate(Extension):
    """wsproto's side of per-message deflate as negotiated here: each compressed message inflated on
    its own (``client_no_context_takeover``), and never to more than ``limit`` bytes, checked as it
    inflates (wsproto's own extension inflates whatever arrives in one call, so a few KB of zeros could
    become gigabytes before a size check).

    Between messages it holds nothing: a parser with it goes back to the pool like any other.
    """

    name = _DEFLATE

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._compressed: bool | None = None  # the message being received: compressed, plain, none
        self._control = False  # the frame being received is a control frame
        self._inflater: Any = None
        self._out = 0

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool:
        return False  # server side only

    def at_rest(self) -> bool:
        return self._compressed is None

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        self._control = opcode.iscontrol()
        if self._control or opcode is Opcode.CONTINUATION:
            # RSV1 marks a message's first frame only (RFC 7692, 6.1)
            return CloseReason.PROTOCOL_ERROR if rsv.rsv1 else RsvBits(False, False, False)
        self._compressed = rsv.rsv1
        self._out = 0
        self._inflater = zlib.decompressobj(-15) if rsv.rsv1 else None
        return RsvBits(True, False, False)

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        left = self.limit - self._out
        try:
            out: bytes = self._inflater.decompress(data, left + 1)
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._out += len(out)
        if self._out > self.limit or self._inflater.unconsumed_tail:
            return CloseReason.MESSAGE_TOO_BIG
        return out

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol, data: bytes) -> bytes | CloseReason:
        if self._control or not self._compressed or not data:
            return data
        return self._inflate(data)

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> bytes | CloseReason | None:
        if self._control or not fin:
            return None
        compressed, self._compressed = self._compressed, None
        if not compressed:
            return None
        out = self._inflate(_SYNC_TAIL)
        self._inflater = None
        return out


def frame_header(buf: bytes | bytearray, pos: int) -> tuple[int, int, int, int] | None:
    """The websocket frame header at ``pos``: its two first bytes, the payload length and where the bytes
    after the length field start (a masked frame's key, else its payload); None while it is incomplete."""
    n = len(buf)
    if n - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    length = b1 & 0x7F
    start = pos + 2
    if length == 126:
        if n - start < 2:
            return None
        length = int.from_bytes(buf[start : start + 2], "big")
        start += 2
    elif length == 127:
        if n - start < 8:
            return None
        length = int.from_bytes(buf[start : start + 8], "big")
        start += 8
    return b0, b1, length, start


def eio_payload(pkt: eio_packet.Packet) -> tuple[bytes, int]:
    """An Engine.IO packet's bytes and the websocket opcode that carries them."""
    encoded = pkt.encode()
    if isinstance(encoded, bytes):
        return encoded, _OP_BINARY
    return encoded.encode(), _OP_TEXT


def eio_frame(pkt: eio_packet.Packet) -> bytes:
    return ws_frame(*eio_payload(pkt))


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
_POOLED_PARSERS = 256  # parsers kept at rest: as many connections as usually receive at the same moment
_ENVIRON_KEPT = ("REMOTE_ADDR", "PATH_INFO", "QUERY_STRING", "HTTP_X_FORWARDED_FOR")
PING_FRAME = ws_frame(b"2")


class DirectSockets:
    """The connections of one server that are on a direct websocket, by Engine.IO sid.

    It also pings them: one task for all, every ping interval, sends Engine.IO's PING to each connection
    that answered the last one (python-engineio would start one task per connection per ping). Unanswered
    pings are still judged by python-engineio's own service task.
    """

    def __init__(
        self,
        max_buffer: int,
        max_fragments: int = 64,
        *,
        compress_min: int = 0,
        compress_level: int = 1,
        inflate_limit: int = 1 << 20,
        fanout_writer: str = "c",
    ) -> None:
        self.max_buffer = max_buffer
        # How a room emit writes its frame to the connections on asyncio's own transports (realtime/sendmany.py).
        self.send_frame: SendFrame | None = pick_writer(fanout_writer)
        self.max_fragments = max_fragments
        self.compress_min = compress_min  # 0: deflate declined
        self.compress_level = compress_level
        self.inflate_limit = inflate_limit
        self._parsers: list[WSConnection] = []  # frame parsers at rest, for whichever connection needs one
        self._inflating: list[WSConnection] = []  # the same, for connections that negotiated deflate
        self.by_eio_sid: dict[str, DirectWebSocket] = {}  # changed through attach and detach only
        self.version = 0  # counts those changes (room emits keep plans until it moves: FastEmit._plan)
        self.slow_consumers_cut = 0
        # Sessions being closed after their connection ended, and polling sessions moving over (the upgrade).
        self.closing: set[asyncio.Future[Any]] = set()
        self._pinger: asyncio.Task[None] | None = None

    def get_parser(self, deflate: bool = False) -> WSConnection:
        """A frame parser at rest: from the pool, or a new one."""
        if deflate:
            if self._inflating:
                return self._inflating.pop()
            return WSConnection(ConnectionType.SERVER, extensions=[BoundedInflate(self.inflate_limit)])
        return self._parsers.pop() if self._parsers else WSConnection(ConnectionType.SERVER)

    def put_parser(self, ws: WSConnection, deflate: bool = False) -> None:
        """Keep a parser at rest for the next connection that receives a frame (the pools are bounded)."""
        pool = self._inflating if deflate else self._parsers
        if len(pool) < _POOLED_PARSERS:
            pool.append(ws)

    def frame(self, pkt: eio_packet.Packet, deflate: bool) -> bytes:
        """``pkt`` as the frame one connection gets: compressed if it negotiated deflate and is large."""
        payload, opcode = eio_payload(pkt)
        if deflate and self.compress_min and len(payload) >= self.compress_min:
            frame = deflate_frame(payload, opcode, self.compress_level)
            if frame is not None:
                return frame
        return ws_frame(payload, opcode)

    def attach(self, ws: DirectWebSocket) -> None:
        self.by_eio_sid[ws.socket.sid] = ws
        self.version += 1
        if self._pinger is None:
            self._pinger = asyncio.ensure_future(self._ping_all(float(ws.server.ping_interval)))

    def detach(self, ws: DirectWebSocket) -> None:
        if self.by_eio_sid.get(ws.socket.sid) is ws:
            del self.by_eio_sid[ws.socket.sid]
            self.version += 1

    async def _ping_all(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            now = time.time()
            for ws in list(self.by_eio_sid.values()):
                socket = ws.socket
                if socket.last_ping is None and not socket.closing and not socket.closed:
                    socket.last_ping = now
                    ws.write(PING_FRAME)

    async def hang_up(self, wait_s: float = 10.0) -> None:
        """Close every direct websocket and wait for their sessions to end (disconnect handlers included).

        aiohttp no longer knows these connections, so its shutdown would not close them: the app calls
        this on shutdown, while the services the disconnect handlers use are still running.
        """
        for ws in list(self.by_eio_sid.values()):
            transport = ws.transport
            ws._close_transport()
            if transport is not None and transport.get_write_buffer_size():
                transport.abort()  # it is not reading: closing would wait for its buffer forever
        await asyncio.sleep(0)  # connection_lost runs on the next turn of the loop and starts the closes
        if self.closing:
            await asyncio.wait(list(self.closing), timeout=wait_s)

    async def close(self) -> None:
        await self.hang_up()
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


class _Hijacked(web.StreamResponse):
    """What a websocket request returns once its connection belongs to :class:`DirectWebSocket`.

    aiohttp "finishes" the request with it: nothing is written, and since the connection is no longer
    aiohttp's (its protocol was told the connection is gone), aiohttp does not close it either.
    """

    def __init__(self) -> None:
        super().__init__(status=101)
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


_CLOSE_NORMAL = ws_frame(b"\x03\xe8", 0x8)
_MAX_PENDING = 32  # messages waiting for the connection's worker before reading pauses
_EVENTS_PER_TURN = 64  # frames parsed per turn of the event loop before the rest waits for the next one
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009


def close_frame(code: int, reason: str = "") -> bytes:
    """A server close frame with a status code and a reason (cut to fit the 125-byte control frame)."""
    return ws_frame(code.to_bytes(2, "big") + reason.encode()[:123], 0x8)


# Two looks into wsproto's frame decoder, each with a safe answer should a later wsproto move it.


def _at_rest(ws: WSConnection, deflate: bool = False) -> bool:
    """Whether ``ws`` holds no part of a frame or message, so that any connection may use it next."""
    try:
        proto = ws._proto
        decoder = proto._frame_decoder
        return (
            ws.state is ConnectionState.OPEN
            and decoder.header is None
            and len(decoder.buffer) == 0
            and proto._message_decoder.opcode is None
            and (not deflate or all(ext.at_rest() for ext in proto.extensions if isinstance(ext, BoundedInflate)))
        )
    except AttributeError:
        return False  # keep the parser


def _announced(ws: WSConnection) -> int:
    """The bytes of data the frame being received still announces (0: none, or unknown)."""
    try:
        decoder = ws._proto._frame_decoder
        header = decoder.header
        if header is None or header.opcode.iscontrol():
            return 0
        return header.payload_len - decoder.payload_consumed
    except AttributeError:
        return 0  # the message is still refused once its bytes pass the limit


class _TooBig(Exception):
    """A message past its size or fragment bound (closed with 1009; the text is the reason)."""


class _Assembly:
    """The parts of the message arriving on one connection, bounded as they arrive (both websocket kinds).

    A message is refused once its bytes pass ``limit`` or its frames pass ``max_fragments``, counted as
    they come, final frame included; :meth:`_over` refuses it on a frame's header, before the bytes it
    announces are read. Between messages a connection holds no list.
    """

    __slots__ = ("_frames", "_parts", "_size")

    def _start_assembly(self) -> None:
        self._parts: list[Any] | None = None  # the parts of a message still arriving
        self._size = 0  # its bytes so far
        self._frames = 0  # and its frames

    def _assemble(self, event: Message[Any], limit: int, max_fragments: int) -> str | bytes | None:
        """Adds one frame (or the part of one that arrived); the whole message once it is complete, else None.
        Raises :class:`_TooBig`."""
        data = event.data
        parts = self._parts
        if parts is None:
            parts = self._parts = []
            self._size = self._frames = 0
        self._size += len(data) if not isinstance(data, str) or data.isascii() else len(data.encode())
        if self._size > limit:
            raise _TooBig(f"message over {limit} bytes")
        if event.frame_finished:
            self._frames += 1
            if self._frames > max_fragments:
                raise _TooBig(f"message in more than {max_fragments} frames")
        if data:
            parts.append(data)
        if not event.message_finished:
            return None
        self._parts = None
        if isinstance(event, TextMessage):
            return "".join(parts)
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)

    def _over(self, ws: WSConnection, limit: int) -> bool:
        """Whether the message arriving, with what the frame being received still announces, passes ``limit``."""
        return (self._size if self._parts is not None else 0) + _announced(ws) > limit


class DirectWebSocket(_Assembly, asyncio.Protocol):
    """python-engineio's websocket transport for aiohttp: after the handshake, the connection is ours.

    The upgrade request is answered here, and the TCP transport is taken from aiohttp: this object
    becomes its protocol and writes complete frames straight to it. An idle connection then holds no
    aiohttp request, response, reader, writer or handler task (those cost about 10 KB per connection);
    messages are handled in order by a task that exists only while there are messages to handle.

    The client's frames are parsed by wsproto (sans-I/O, RFC 6455: masking, reserved bits and opcodes,
    control frames at most 125 bytes and never fragmented, close codes, UTF-8 of text checked as it
    arrives, also across fragments). Around it this class bounds what one connection can make the server
    do: a message is refused (1009) once its bytes pass the Engine.IO packet limit or its frames pass
    ``STUDYHALL_WS_MAX_FRAGMENTS``, counted as they arrive, final frame included; at most
    ``_EVENTS_PER_TURN`` frames are parsed per turn of the event loop, and reading pauses while parsed
    messages or unparsed bytes wait, so a flood of tiny frames costs its sender time, not the other
    clients. A connection holds a parser only while a frame or message is arriving (wsproto's costs about
    1.7 KB, a quarter of an idle connection); between messages it goes back to a small pool the
    connections share, which saves making a new one for every message.
    """

    __slots__ = (
        "_pending",
        "_waiter",
        "_worker",
        "_ws",
        "deflate",
        "raw",
        "registry",
        "server",
        "socket",
        "transport",
    )

    def __init__(self, handler: Any, server: Any, registry: DirectSockets) -> None:
        # ``handler`` is the bound ``AsyncSocket._websocket_handler`` of the Engine.IO socket.
        self.socket: Any = handler.__self__
        self.server = server
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.raw: Any = None  # the transport again, if room emits may send to it directly (realtime/sendmany.py)
        self._ws: WSConnection | None = None  # the frame parser, while frames are arriving
        self._start_assembly()
        self._pending: collections.deque[str | bytes] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the upgrade handshake waiting for a message
        self.deflate = False  # per-message deflate negotiated (without context takeover)

    async def __call__(self, environ: dict[str, Any]) -> web.StreamResponse:
        request: web.Request = environ["aiohttp.request"]
        if not web.WebSocketResponse().can_prepare(request).ok:  # aiohttp's checks of the upgrade request
            message = "not a valid websocket upgrade request"
            return web.json_response({"error": {"code": "invalid_input", "message": message}}, status=400)
        transport = request.transport
        protocol = request.protocol
        if transport is None or transport.is_closing():
            return _Hijacked()
        accept = base64.b64encode(hashlib.sha1(request.headers["Sec-WebSocket-Key"].encode() + WS_KEY).digest())
        # python-socketio keeps this environ for the connection's lifetime (``sio.environ``): every request
        # header as a WSGI key, and the aiohttp request. Keep what identifies the client.
        kept = {k: environ[k] for k in _ENVIRON_KEPT if k in environ}
        environ.clear()
        environ.update(kept)
        tail: bytes = bytes(getattr(protocol, "_message_tail", b"") or b"")
        self.deflate = bool(self.registry.compress_min) and takes_deflate(
            request.headers.getall("Sec-WebSocket-Extensions", [])
        )
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + (DEFLATE_ANSWER if self.deflate else b"") + b"\r\n"
        )
        transport.set_protocol(self)
        self.transport = transport
        self.raw = direct_transport(transport)
        # aiohttp's side of the connection ends here: its handler forgets the transport (and is dropped
        # from the server's connection list), so finishing this request neither writes nor closes.
        protocol.transport = None
        protocol.connection_lost(None)
        if tail:
            self.data_received(tail)
        socket = self.socket
        if socket.connected:
            # A long-polling session moving over: its handshake runs in a task of its own, since aiohttp may
            # cancel this request's handler now that the connection is no longer its own.
            handshake = asyncio.ensure_future(self._upgrade_and_attach())
            self.registry.closing.add(handshake)
            handshake.add_done_callback(self.registry.closing.discard)
            return _Hijacked()
        socket.connected = True
        socket.upgraded = True
        if not self._attach():
            self._close_transport()
        return _Hijacked()

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        if ws is None:
            ws = self._ws = self.registry.get_parser(self.deflate)
        ws.receive_data(data)
        self._consume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.detach(self)
        self._ws = None
        self._parts = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._pending = None
        if self._worker is None:
            self._end_session()

    def _end_session(self) -> None:
        socket = self.socket
        if not socket.closed and not socket.closing:
            task = asyncio.ensure_future(
                socket.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
            )
            self.registry.closing.add(task)
            task.add_done_callback(self.registry.closing.discard)

    # --- frames and messages -----------------------------------------------------------------------

    def _consume(self) -> None:
        """Handle the frames that arrived, a bounded number per turn of the event loop.

        Reading pauses while unparsed bytes or more than ``_MAX_PENDING`` messages wait; it resumes once
        both are gone (the worker calls back here as it drains the messages).
        """
        ws, transport = self._ws, self.transport
        if ws is None or transport is None or transport.is_closing():
            return
        budget = _EVENTS_PER_TURN
        for event in ws.events():
            if isinstance(event, Message):
                if not self._part(event):
                    return
            elif isinstance(event, Ping):
                self.write(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self._closed(ws, event)
                return
            # a Pong needs nothing
            budget -= 1
            if budget == 0 or (self._pending is not None and len(self._pending) > _MAX_PENDING):
                transport.pause_reading()
                if budget == 0:
                    asyncio.get_running_loop().call_soon(self._consume)
                return
        if self._over(ws, self.server.max_http_buffer_size):
            # Refused on its header: no need to wait for the bytes of a message that cannot be taken.
            self._fail(CLOSE_TOO_BIG, f"message over {self.server.max_http_buffer_size} bytes")
            return
        if self._pending is None or len(self._pending) <= _MAX_PENDING:
            transport.resume_reading()
        if self._parts is None and _at_rest(ws, self.deflate):
            # Between messages the parser holds nothing of this connection: it goes back to the shared pool.
            self._ws = None
            self.registry.put_parser(ws, self.deflate)

    def _part(self, event: Message[Any]) -> bool:
        """One frame (or the part of one that arrived) of a message; False if the connection ended."""
        try:
            message = self._assemble(event, self.server.max_http_buffer_size, self.registry.max_fragments)
        except _TooBig as exc:
            self._fail(CLOSE_TOO_BIG, str(exc))
            return False
        if message is not None:
            self._message(message)
        return True

    def _closed(self, ws: WSConnection, event: CloseConnection) -> None:
        """The client's close frame (answered with its own code, as RFC 6455 has it), or a protocol error."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if ws.state is ConnectionState.REMOTE_CLOSING:
            transport.write(ws.send(event.response()))
            transport.close()
        else:  # wsproto found the frames invalid: 1002, or 1007 for text that is not UTF-8
            self._fail(event.code, event.reason or "protocol error")

    def _message(self, data: str | bytes) -> None:
        if self._pending is None:
            self._pending = collections.deque()
        self._pending.append(data)
        if self._waiter is not None:
            if not self._waiter.done():
                self._waiter.set_result(None)
            return
        if self._worker is None and self.registry.by_eio_sid.get(self.socket.sid) is self:
            self._worker = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        """Hand the waiting messages to Engine.IO, one after the other; ends when none are left."""
        try:
            while self._pending:
                data = self._pending.popleft()
                transport = self.transport
                if len(self._pending) <= _MAX_PENDING and transport is not None and not transport.is_reading():
                    self._consume()  # the frames that waited for room, then reading again
                if not await self._deliver(data):
                    self._close_transport()
                    break
        finally:
            self._worker = None
            if not self._pending:
                self._pending = None  # an idle connection keeps no empty deque (about 600 bytes)
            if self.transport is None or self.transport.is_closing():
                self._end_session()

    async def _deliver(self, data: str | bytes) -> bool:
        """One Engine.IO packet to python-engineio; False if the connection should end."""
        socket = self.socket
        try:
            pkt = eio_packet.Packet(encoded_packet=data)
        except Exception as exc:  # not Engine.IO at all: a broken or hostile client
            log.warning("closing Engine.IO client %s: malformed packet (%s)", socket.sid, type(exc).__name__)
            return False
        try:
            await socket.receive(pkt)
        except socketio.exceptions.SocketIOError:
            return True
        except Exception as exc:  # engineio's own exceptions, and anything a handler let escape
            if type(exc).__name__ == "SocketIsClosedError":
                return False
            if type(exc).__name__ != "UnknownPacketError":
                log.exception("Engine.IO receive error on %s", socket.sid)
        return not socket.closed

    def _fail(self, code: int, why: str) -> None:
        """Close with ``code`` (1002 protocol error, 1007 not UTF-8, 1009 too big), logging one line."""
        log.warning("closing Engine.IO client %s: websocket %d, %s", self.socket.sid, code, why)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(close_frame(code, why))
            self.transport.close()

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_CLOSE_NORMAL)
            transport.close()

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
        if pkt.packet_type == eio_packet.CLOSE:
            # The server ends this session (a disconnect, or a ping timeout): say so and hang up.
            self.write(eio_frame(pkt))
            self._close_transport()
            return
        if socket.closed or not await socket.check_ping_timeout():
            return
        self.write(self.registry.frame(pkt, self.deflate))

    # --- the Engine.IO websocket session -----------------------------------------------------------

    async def _receive(self) -> str | bytes | None:
        """The next message, for the upgrade handshake (before the connection has its worker)."""
        timeout = self.server.ping_interval + self.server.ping_timeout
        while not self._pending:
            if self.transport is None or self.transport.is_closing():
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        return self._pending.popleft()

    async def _upgrade_and_attach(self) -> None:
        if not await self._upgrade() or not self._attach():
            self._close_transport()

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
        except Exception:  # a malformed probe: not Engine.IO
            return False
        finally:
            socket.upgrading = False

    def _attach(self) -> bool:
        """Flush what waits in the Engine.IO queue, then take over the socket's sends and receives."""
        socket = self.socket
        while True:
            try:
                pkt = socket.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            socket.queue.task_done()
            if pkt is None:  # the session is being torn down
                return False
            self.write(self.registry.frame(pkt, self.deflate))
        if self.transport is None or self.transport.is_closing():
            return False
        socket.send = self.send_packet
        socket.schedule_ping = self._pong
        socket.queue = DRAINED
        self.registry.attach(self)
        if self._pending and self._worker is None:  # messages that came with the handshake
            self._worker = asyncio.ensure_future(self._work())
        return True

    def _pong(self) -> None:
        """Replaces ``AsyncSocket.schedule_ping``: the PONG arrived; the shared pinger sends the next PING."""
        self.socket.last_ping = None


class _Plan:
    """The recipients of a room emit on this node, sorted by how each is written to (FastEmit._plan)."""

    __slots__ = ("deflating", "plain", "queued", "raws", "writers")

    def __init__(self) -> None:
        self.raws: list[Any] = []  # transports the frame goes to in one send_frame call ...
        self.writers: list[DirectWebSocket] = []  # ... and their connections
        self.plain: list[DirectWebSocket] = []  # connections written to with write(frame)
        self.deflating: list[DirectWebSocket] = []  # a large message's compressed frame
        self.queued: list[str] = []  # Engine.IO sids on long-polling


class FastEmit(socketio.AsyncManager):  # type: ignore[misc]
    """A client manager whose room emits write one shared frame to every local direct websocket.

    Its ``emit`` is every node's local delivery (the Redis manager publishes, then hands what it and the
    other nodes published to it here). An event that ``order`` follows (``chat:message``) goes through
    :class:`realtime.ordered.OrderedRooms` first, which calls :meth:`emit_here` in ``seq`` order.
    """

    direct: DirectSockets
    order: OrderedRooms | None = None
    plan_min_members = 16  # rooms smaller than this are walked on every emit (see _plan)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.members_version = 0  # counts room changes (the basic_* methods below)
        self._plans: dict[tuple[str, str, bool], _Plan] = {}
        self._plans_version = (-1, -1)

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
        room = to or room
        order = self.order
        if (
            order is not None
            and order.ordered(event)
            and isinstance(room, str)
            and namespace == "/"
            and skip_sid is None
            and callback is None
        ):
            await order.offer(room, data)
            return
        await self.emit_here(event, data, namespace, room, skip_sid, callback, **kwargs)

    async def emit_here(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any,
        skip_sid: Any = None,
        callback: Any = None,
        **kwargs: Any,
    ) -> None:
        """Write ``event`` to the room's connections on this node, now."""
        direct = getattr(self, "direct", None)
        if callback is not None or direct is None:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)
            return
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
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)
            return
        pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
        payload, opcode = eio_payload(pkt)
        frame = ws_frame(payload, opcode)
        # A large message is compressed once, for all the connections that negotiated deflate.
        big = direct.compress_min and len(payload) >= direct.compress_min
        plan = self._plan(direct, namespace, room, skip_sid, bool(big))
        for ws in plan.plain:
            ws.write(frame)
        if plan.deflating:
            deflated = deflate_frame(payload, opcode, direct.compress_level) or frame
            for ws in plan.deflating:
                ws.write(deflated)
        if plan.raws and direct.send_frame is not None:
            rest = direct.send_frame(plan.raws, frame)
            if rest:
                finish(plan.writers, rest, frame)
        for eio_sid in plan.queued:
            await self.server._send_eio_packet(eio_sid, pkt)

    def _plan(self, direct: DirectSockets, namespace: str, room: Any, skip_sid: Any, big: bool) -> _Plan:
        """Who a room emit writes to on this node, and how.

        A room's plan is kept until anyone on this node enters or leaves a room, connects or disconnects
        (then every plan is dropped), for rooms of at least :attr:`plan_min_members` and emits that skip
        nobody: a chat message to a room of 1,000 then walks no member list (bench/RESULTS.md). A member
        whose connection ended meanwhile is harmless in a kept plan: its transport is closing, so
        neither ``send_frame`` nor ``write`` sends it anything.
        """
        version = (self.members_version, direct.version)
        if self._plans_version != version:
            self._plans.clear()
            self._plans_version = version
        keep = isinstance(room, str) and skip_sid is None
        if keep:
            plan = self._plans.get((namespace, room, big))
            if plan is not None:
                return plan
            # The room's members as they are: nothing here awaits or changes rooms, so no copy is needed
            # (get_participants copies).
            members = self.rooms[namespace].get(room)
            participants: Any = members._fwdm.items() if members is not None else ()
            keep = members is not None and len(members) >= self.plan_min_members
        else:
            participants = self.get_participants(namespace, room)
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        by_eio_sid = direct.by_eio_sid
        plan = _Plan()
        send_frame = direct.send_frame  # None (STUDYHALL_WS_FANOUT_WRITER=transport): no raws
        for sid, eio_sid in participants:
            if sid in skip:
                continue
            ws = by_eio_sid.get(eio_sid)
            if ws is None:
                plan.queued.append(eio_sid)
            elif not ws.socket.closed:
                if big and ws.deflate:
                    plan.deflating.append(ws)
                elif (raw := ws.raw) is not None and send_frame is not None:
                    plan.raws.append(raw)
                    plan.writers.append(ws)
                else:
                    plan.plain.append(ws)
        if keep:
            self._plans[(namespace, room, big)] = plan
        return plan

    # Rooms change only through these (python-socketio's BaseManager): each one drops the kept plans.
    def basic_enter_room(self, *args: Any, **kwargs: Any) -> Any:
        self.members_version += 1
        return super().basic_enter_room(*args, **kwargs)

    def basic_leave_room(self, *args: Any, **kwargs: Any) -> Any:
        self.members_version += 1
        return super().basic_leave_room(*args, **kwargs)

    def basic_close_room(self, *args: Any, **kwargs: Any) -> Any:
        self.members_version += 1
        return super().basic_close_room(*args, **kwargs)

    def basic_disconnect(self, *args: Any, **kwargs: Any) -> Any:
        self.members_version += 1
        return super().basic_disconnect(*args, **kwargs)

    def room_has_members(self, room: str, namespace: str = "/") -> bool:
        """Whether any connection on this node sits in ``room``."""
        return room in self.rooms.get(namespace, {})

    def enter_here(self, sid: str, room: str, namespace: str = "/") -> bool:
        """Put a connection of this node into ``room`` at once (no await); False if it is not connected."""
        if not self.is_connected(sid, namespace):
            return False
        self.basic_enter_room(sid, namespace, room)
        return True


class FastManager(FastEmit):
    """The in-process manager (no Redis) with the shared-frame room emit."""


class FastRedisManager(socketio.AsyncRedisManager, FastEmit):  # type: ignore[misc]
    """The Redis manager: emits are published as before; each node's local delivery is :class:`FastEmit`'s."""


# --- the connection takeover for binary protocols (``/yjs``) --------------------------------------------


def upgrade_problem(request: web.Request) -> web.Response | None:
    """A 400 answer if ``request`` is not a websocket upgrade aiohttp would accept, else None."""
    if web.WebSocketResponse().can_prepare(request).ok:
        return None
    message = "not a valid websocket upgrade request"
    return web.json_response({"error": {"code": "invalid_input", "message": message}}, status=400)


CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_TRY_AGAIN = 1013
CLOSE_GOING_AWAY = 1001
_CLOSE_ABORT_S = 5.0  # a connection whose close frame has not left this long after closing is aborted
_PING_EMPTY = ws_frame(b"", 0x9)


class BinarySockets:
    """The takeover websockets of one binary protocol on this node (``/yjs``): their shared parsers,
    one pinger for all of them, and closing them all on shutdown.

    Args:
        max_buffer: a client with more unsent bytes than this (it stopped reading) is closed (1013).
        max_message: a message larger than this closes its connection with 1009 (refused on its header
            when the frame announces it).
        max_fragments: most frames one message may be split into (1009 past it).
        heartbeat_s: every this often each connection is pinged; one that sent nothing since the last
            ping (no pong either) is dropped.
    """

    def __init__(self, max_buffer: int, max_message: int, max_fragments: int = 64, heartbeat_s: float = 30.0) -> None:
        self.max_buffer = max_buffer
        self.max_message = max_message
        self.max_fragments = max_fragments
        self.heartbeat_s = heartbeat_s
        self.open: set[BinaryWebSocket] = set()
        self._parsers: list[WSConnection] = []
        self.slow_consumers_cut = 0
        self._pinger: asyncio.Task[None] | None = None
        self.emptied: asyncio.Event | None = None  # set when the last one ends, while hanging up
        # While one connection's frames are being handled: the connections given frames meanwhile, written
        # once it is done (no extra turn of the loop for each write).
        self.dirty: list[BinaryWebSocket] | None = None

    def get_parser(self) -> WSConnection:
        return self._parsers.pop() if self._parsers else WSConnection(ConnectionType.SERVER)

    def put_parser(self, ws: WSConnection) -> None:
        if len(self._parsers) < _POOLED_PARSERS:
            self._parsers.append(ws)

    def attach(self, sock: BinaryWebSocket) -> None:
        self.open.add(sock)
        if self._pinger is None:
            self._pinger = asyncio.ensure_future(self._ping_all())

    async def _ping_all(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            for sock in list(self.open):
                if sock.quiet:  # nothing since the last ping, not even its pong: the peer is gone
                    sock.abort()
                else:
                    sock.quiet = True
                    sock.write(_PING_EMPTY)

    async def hang_up(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutting down", wait_s: float = 2.0
    ) -> None:
        """Close every connection with ``code`` and wait (at most ``wait_s``) for the clients' answers;
        the rest are aborted. Their ``connection_closed`` hooks have run when this returns.

        aiohttp no longer knows these connections, so its shutdown would not close them.
        """
        self.emptied = asyncio.Event()
        for sock in list(self.open):
            sock.close(code, reason)
        if self.open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.emptied.wait(), wait_s)
        for sock in list(self.open):
            sock.abort()
        await asyncio.sleep(0)  # connection_lost runs on the next turn of the loop

    async def close(self) -> None:
        await self.hang_up()
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None


def unmask(payload: bytes, key: bytes) -> bytes:
    """A client frame's payload unmasked with its 4-byte ``key`` (RFC 6455, 5.3), by aiohttp's unmasking
    (C when built; aiohttp is pinned)."""
    out = bytearray(payload)
    _websocket_mask(key, out)
    return bytes(out)


class BinaryWebSocket(_Assembly, asyncio.Protocol):
    """A websocket for a binary message protocol that takes its connection from aiohttp after the upgrade.

    :meth:`take` answers the upgrade request and becomes the TCP transport's protocol, as
    :class:`DirectWebSocket` does for Engine.IO: no aiohttp request, reader, writer or handler task is
    left per connection. Frames are parsed by wsproto with the same bounds (message size and fragments
    counted as they arrive, a frame refused on its header, at most ``_EVENTS_PER_TURN`` frames parsed
    per turn of the loop, the parser back in a shared pool between messages), and each complete binary
    message is handed to :meth:`message_received` **synchronously**, in order, in the turn it arrived: a
    subclass whose handling needs no ``await`` costs no task, queue or future per message.

    :meth:`send` queues a binary frame; the frames queued for a connection while another connection's
    frames are handled leave in one ``write`` right after them, and those queued elsewhere at the end of
    the turn of the loop.
    A client with more than ``max_buffer`` bytes unsent is closed with 1013. Pings are answered, the
    client's close is echoed, a text message closes with 1003, per-message deflate is declined (what
    these protocols send is small, and each compressing connection would cost a context).
    """

    __slots__ = (
        "_closer", "_loop", "_out", "_rest", "_ws", "quiet", "registry", "transport",
    )  # fmt: skip

    def __init__(self, registry: BinarySockets) -> None:
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self._ws: WSConnection | None = None
        self._start_assembly()
        self._out: list[bytes] | None = None
        self._rest: bytes | None = None  # the fast path's unread bytes: a frame cut short, or the next turn's
        self._loop = asyncio.get_running_loop()
        self.quiet = False  # pinged and nothing heard since
        self._closer: asyncio.TimerHandle | None = None  # our close frame sent: aborts if no answer comes

    # --- hooks ---------------------------------------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        """One complete binary message (a subclass handles it; it may :meth:`close`)."""

    def connection_closed(self) -> None:
        """The connection ended (closed by either side, cut off, or lost)."""

    # --- the handshake -------------------------------------------------------------------------------

    def take(self, request: web.Request) -> web.StreamResponse:
        """Answer the upgrade (checked with :func:`upgrade_problem` first) and take the connection.

        Returns what the aiohttp handler must return. If the client left meanwhile nothing is taken and
        :meth:`connection_closed` is not called (check :attr:`taken`).
        """
        transport = request.transport
        protocol = request.protocol
        if transport is None or transport.is_closing():
            return _Hijacked()
        accept = base64.b64encode(hashlib.sha1(request.headers["Sec-WebSocket-Key"].encode() + WS_KEY).digest())
        tail: bytes = bytes(getattr(protocol, "_message_tail", b"") or b"")
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        transport.set_protocol(self)
        self.transport = transport
        protocol.transport = None  # aiohttp's side of the connection ends here (see DirectWebSocket)
        protocol.connection_lost(None)
        self.registry.attach(self)
        if tail:  # frames that came with the request: read once the caller has set the connection up
            self._loop.call_soon(self.data_received, tail)
        return _Hijacked()

    @property
    def taken(self) -> bool:
        return self.transport is not None

    # --- asyncio.Protocol ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.quiet = False
        registry = self.registry
        if registry.dirty is not None:  # (not reached from asyncio; a handler that feeds another connection)
            self._received(data)
            return
        dirty = registry.dirty = []
        try:
            self._received(data)
        finally:
            registry.dirty = None
            for sock in dirty:
                sock._flush()

    def _received(self, data: bytes) -> None:
        ws = self._ws
        if ws is None:
            if self._rest is not None:
                data, self._rest = self._rest + data, None
            if self._closer is None:
                data = self._complete_frames(data)
                if not data:
                    return
            ws = self._ws = self.registry.get_parser()
        ws.receive_data(data)
        self._consume()

    def _complete_frames(self, data: bytes) -> bytes:
        """The fast path, taken between messages: the masked, unfragmented binary frames at the start of
        ``data`` (what clients send) are unmasked and handled here, at most ``_EVENTS_PER_TURN`` per turn
        of the loop (reading pauses meanwhile); a frame cut short waits in ``_rest`` for its end. What is
        returned (from a control, text or fragmented frame on, one of 64 KB or more, or one over the
        limit) goes to wsproto, with all its checks."""
        pos, n = 0, len(data)
        budget = _EVENTS_PER_TURN
        limit = self.registry.max_message
        while pos < n:
            if data[pos] != 0x82 or (n - pos > 1 and data[pos + 1] < 0x80):  # FIN, no RSV, binary; masked
                break
            if n - pos < 6:
                self._rest = data[pos:]
                return b""
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                length = int.from_bytes(data[start : start + 2], "big")
                start += 2
            elif length == 127:
                break
            if length > limit:
                break
            end = start + 4 + length
            if end > n:
                if length >= 16384:  # a large one is gathered by wsproto (no copy of the whole per read)
                    break
                self._rest = data[pos:]
                return b""
            if not budget:  # the rest in the next turn of the loop: other connections get theirs first
                self._rest = data[pos:]
                if self.transport is not None:
                    self.transport.pause_reading()
                self._loop.call_soon(self._continue)
                return b""
            pos = end
            budget -= 1
            if not self._deliver(unmask(data[start + 4 : end], data[start : start + 4])):
                break
            if self._closer is not None:  # the handler closed it: wsproto looks for the client's answer
                break
        return data[pos:] if pos else data

    def _continue(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.resume_reading()
        if self._rest is not None and self._ws is None:
            rest, self._rest = self._rest, None
            self.data_received(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if self not in self.registry.open:
            return
        self.registry.open.discard(self)
        if not self.registry.open and self.registry.emptied is not None:
            self.registry.emptied.set()
        if self._closer is not None:
            self._closer.cancel()
        self._ws = None
        self._parts = None
        self._out = None
        self.connection_closed()

    # --- frames and messages -------------------------------------------------------------------------

    def _consume(self) -> None:
        ws, transport = self._ws, self.transport
        if ws is None or transport is None or transport.is_closing():
            return
        budget = _EVENTS_PER_TURN
        for event in ws.events():
            if self._closer is not None:  # we sent our close frame: nothing but the answer matters now
                if isinstance(event, CloseConnection):
                    transport.close()
                    return
                continue
            if isinstance(event, Message):
                if not self._part(event):
                    return
            elif isinstance(event, Ping):
                self.write(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self._flush()
                    transport.write(ws.send(event.response()))
                    transport.close()
                else:  # invalid frames (1002, or 1007 for text that is not UTF-8): the connection is failed,
                    # closed right after the close frame (RFC 6455 7.1.7; nothing more can be parsed anyway)
                    self._flush()
                    transport.write(close_frame(event.code, _utf8_cut(event.reason or "protocol error", 123)))
                    transport.close()
                return
            budget -= 1
            if budget == 0:
                transport.pause_reading()
                self._loop.call_soon(self._consume)
                return
        if self._closer is not None:
            transport.resume_reading()
            return
        limit = self.registry.max_message
        if self._over(ws, limit):
            self.close(CLOSE_TOO_BIG, f"message over {limit} bytes")
            return
        transport.resume_reading()
        if self._parts is None and _at_rest(ws):
            self._ws = None
            self.registry.put_parser(ws)

    def _part(self, event: Message[Any]) -> bool:
        """One frame (or the part of one that arrived); False if the connection ended."""
        if isinstance(event, TextMessage):
            self.close(CLOSE_UNSUPPORTED_DATA, "this endpoint's messages are binary")
            return False
        try:
            message = self._assemble(event, self.registry.max_message, self.registry.max_fragments)
        except _TooBig as exc:
            self.close(CLOSE_TOO_BIG, str(exc))
            return False
        return message is None or (isinstance(message, bytes) and self._deliver(message))  # text was refused above

    def _deliver(self, message: bytes) -> bool:
        try:
            self.message_received(message)
        except Exception:
            log.exception("websocket message handler failed")
            self.close(1011, "internal error; it has been logged")
            return False
        return True

    # --- writing -------------------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Queue ``payload`` as one binary frame; the frames of one turn of the loop leave in one write."""
        n = len(payload)
        if n < 126:
            header = bytes((0x82, n))
        elif n < 65536:
            header = struct.pack("!BBH", 0x82, 126, n)
        else:
            header = struct.pack("!BBQ", 0x82, 127, n)
        out = self._out
        if out is None:
            self._out = [header, payload]
            dirty = self.registry.dirty
            if dirty is not None:  # written when the frames being handled are done
                dirty.append(self)
            else:
                self._loop.call_soon(self._flush)
        else:
            out.append(header)
            out.append(payload)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out:
            self.write(b"".join(out))

    def write(self, data: bytes) -> bool:
        """Write now; ``False`` if the connection is gone (or was just closed: its client stopped reading)."""
        transport = self.transport
        if transport is None or self._closer is not None or transport.is_closing():
            return False
        transport.write(data)
        if transport.get_write_buffer_size() > self.registry.max_buffer:
            self.registry.slow_consumers_cut += 1
            log.warning("closing a websocket: %d bytes unsent (it stopped reading)", transport.get_write_buffer_size())
            self.close(CLOSE_TRY_AGAIN, "not reading fast enough")
            return False
        return True

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then a close frame with ``code``; the connection ends when the client
        answers with its own (RFC 6455, 7.1.1: the server closes the TCP connection then), or is aborted
        if no answer comes within a few seconds (it stopped reading, say)."""
        transport = self.transport
        if transport is None or self._closer is not None or transport.is_closing():
            return
        out, self._out = self._out, None
        if out:
            transport.write(b"".join(out))
        transport.write(close_frame(code, _utf8_cut(reason, 123)))
        self._closer = self._loop.call_later(_CLOSE_ABORT_S, transport.abort)
        transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _utf8_cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes without splitting a character."""
    return text.encode()[:limit].decode(errors="ignore")
