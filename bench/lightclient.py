"""A light Socket.IO client for load: one asyncio protocol per connection speaking raw websocket frames.

It implements just enough of RFC 6455, Engine.IO v4 and Socket.IO v5 to connect with ``auth``, answer
pings, send events with acks and hand every server event to a callback as raw bytes, so a thousand of
them fit in one process and the load generator costs little per delivery. It can offer per-message
deflate (as browsers do) and inflates what comes back compressed. Client frames are masked with a zero
key, which RFC 6455 allows and leaves the payload as is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import zlib
from collections.abc import Callable
from typing import Any, cast

from realtime.fastws import frame_header

EventCallback = Callable[[bytes], None]


class ConnectError(Exception):
    """The server refused the websocket upgrade or the Socket.IO connect."""


def _client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + b"\0\0\0\0" + payload


class LightClient(asyncio.Protocol):
    """One Socket.IO connection over a raw websocket. Use :func:`connect`."""

    def __init__(
        self,
        host: str,
        path: str,
        auth: dict[str, Any],
        on_event: EventCallback | None,
        deflate: bool,
        inflate_head: int = 0,
    ):
        self.host = host
        self.path = path
        self.auth = auth
        self.on_event = on_event
        self.offer_deflate = deflate
        # >0: inflate only the first this many bytes of each compressed message, each on its own (the server
        # compresses without context takeover): a load generator that only looks at the event's name.
        self.inflate_head = inflate_head
        self.deflate_accepted = False
        self._inflate: Any = None
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False
        self._fragments: list[bytes] = []
        self._fragment_compressed = False
        self.compressed_received = 0  # messages that arrived compressed
        self.extensions_answer = ""  # the server's Sec-WebSocket-Extensions, as it answered
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_ack = 0
        self.answer_pings = True  # False plays a client that hung: the server should drop it

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's transports do not subclass asyncio's)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if self.offer_deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectError(f"connection closed during the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)
        for fut in self._acks.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            if " 101 " not in head[0] + " ":
                self._fail(f"websocket upgrade refused: {head[0]}")
                return
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-extensions" and "permessage-deflate" in value:
                    self.extensions_answer = value.strip()
                    self.deflate_accepted = True
                    self._inflate = zlib.decompressobj(-15)
            self._upgraded = True
        pos, n = 0, len(buf)
        while (header := frame_header(buf, pos)) is not None:
            b0, _, length, start = header
            if n - start < length:
                break
            payload = bytes(buf[start : start + length])
            pos = start + length
            self._frame(b0, payload)
        if pos:
            del buf[:pos]

    # --- frames and packets -------------------------------------------------------------------------

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        if opcode >= 0x8:
            if opcode == 0x8 and self.transport is not None:  # close
                self.transport.close()
            elif opcode == 0x9 and self.transport is not None:  # websocket ping
                self.transport.write(_client_frame(payload, 0xA))
            return
        if opcode != 0:
            self._fragment_compressed = bool(b0 & 0x40)
        if not b0 & 0x80:
            self._fragments.append(payload)
            return
        if self._fragments:
            payload = b"".join([*self._fragments, payload])
            self._fragments = []
        if self._fragment_compressed:
            self.compressed_received += 1
            if self.inflate_head:
                inflater = zlib.decompressobj(-15)
                head = inflater.decompress(payload, self.inflate_head)
                if head.startswith(b"42"):  # an event: its head names it
                    payload = head
                else:  # an ack or anything else: all of it
                    payload = head + inflater.decompress(inflater.unconsumed_tail + b"\x00\x00\xff\xff")
            else:
                payload = self._inflate.decompress(payload + b"\x00\x00\xff\xff")
        self._packet(payload)

    def _packet(self, p: bytes) -> None:
        kind = p[:1]
        if kind == b"4":
            sio = p[1:2]
            if sio == b"2":
                if self.on_event is not None:
                    self.on_event(p)
            elif sio == b"3":
                self._ack(p[2:])
            elif sio == b"0":
                if not self.connected.done():
                    self.connected.set_result(json.loads(p[2:] or b"{}"))
            elif sio == b"4":
                if not self.connected.done():
                    self.connected.set_exception(ConnectError(p[2:].decode(errors="replace")))
            elif sio == b"1" and self.transport is not None:
                self.transport.close()
        elif kind == b"2":
            if self.answer_pings:
                self._send(b"3")
        elif kind == b"0":
            self._send(b"40" + json.dumps(self.auth).encode())
        elif kind == b"1" and self.transport is not None:
            self.transport.close()

    def _ack(self, rest: bytes) -> None:
        i = 0
        while i < len(rest) and 48 <= rest[i] <= 57:
            i += 1
        fut = self._acks.pop(int(rest[:i]), None)
        if fut is not None and not fut.done():
            args = json.loads(rest[i:])
            fut.set_result(args[0] if args else None)

    def _fail(self, reason: str) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectError(reason))
        if self.transport is not None:
            self.transport.close()

    def _send(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_client_frame(payload))

    # --- API -------------------------------------------------------------------------------------

    def send_compressed(self, payload: bytes) -> None:
        """Send one Engine.IO packet as a compressed message (RFC 7692; deflate must have been accepted)."""
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
        frame = bytearray(_client_frame(body.removesuffix(b"\x00\x00\xff\xff")))
        frame[0] |= 0x40  # RSV1: this message is compressed
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes(frame))

    def emit(self, event: str, data: Any) -> None:
        """Send an event without asking for an ack."""
        self._send(b"42" + json.dumps([event, data], separators=(",", ":")).encode())

    async def call(self, event: str, data: Any, wait_s: float = 30.0) -> Any:
        """Send an event and wait for its ack."""
        self._next_ack += 1
        ack_id = self._next_ack
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = fut
        self._send(b"42" + str(ack_id).encode() + json.dumps([event, data], separators=(",", ":")).encode())
        return await asyncio.wait_for(fut, wait_s)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_client_frame(b"\x03\xe8", 0x8))
            self.transport.close()


async def connect(
    host: str,
    port: int,
    token: str,
    *,
    on_event: EventCallback | None = None,
    deflate: bool = False,
    inflate_head: int = 0,
    wait_s: float = 30.0,
) -> LightClient:
    """Open a websocket to ``/socket.io/`` and complete the Socket.IO connect with ``auth: {token}``."""
    loop = asyncio.get_running_loop()
    path = "/socket.io/?EIO=4&transport=websocket"
    _, client = await loop.create_connection(
        lambda: LightClient(f"{host}:{port}", path, {"token": token}, on_event, deflate, inflate_head), host, port
    )
    try:
        await asyncio.wait_for(client.connected, wait_s)
    except BaseException:
        client.close()
        raise
    return client
