"""The Socket.IO websocket's frame layer against RFC 6455, case by case, and the frame floods of issue 12.

Every case opens a raw websocket to ``/socket.io/`` (no account: these are things anyone can send before
logging in), writes hand-made frames and reads what the server answers. The cases follow the Autobahn
testsuite (crossbario/autobahn-testsuite, ``case/case*.py``): 2.x pings, 3.x reserved bits, 4.x reserved
opcodes, 5.x fragmentation, 6.x UTF-8, 7.x close handling, 9.x limits (here: the Engine.IO packet
limit of 256 KiB and ``STUDYHALL_WS_MAX_FRAGMENTS``). Where Autobahn accepts either of two close codes,
the one the server gives is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import struct
from dataclasses import dataclass

import pytest

from realtime.app import SETTINGS
from realtime.sockets import MAX_PACKET_BYTES
from tests.chat_helpers import WAIT_S, make_room, open_tab
from tests.conftest import ApiClient

FIN = 0x80
TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One client frame, masked with a random key (as RFC 6455 asks of clients)."""
    n = len(payload)
    first = (FIN if fin else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass
class Answer:
    """What the server sent back: data frames (opcode, payload), and how it closed."""

    frames: list[tuple[int, bytes]]
    close_code: int | None  # None: closed without a close frame, or an empty one
    closed: bool


class RawSocket:
    """A websocket to ``/socket.io/?EIO=4&transport=websocket`` spoken by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes = b"") -> None:
        self.reader = reader
        self.writer = writer
        self.head = head  # the server's answer to the upgrade request

    @classmethod
    async def open(cls, port: int, extensions: str | None = None) -> RawSocket:
        """Connect; ``extensions``: a ``Sec-WebSocket-Extensions`` offer to make."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        offer = f"Sec-WebSocket-Extensions: {extensions}\r\n".encode() if extensions is not None else b""
        writer.write(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            + offer
            + b"\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
        assert head.startswith(b"HTTP/1.1 101"), head
        sock = cls(reader, writer, head)
        opcode, opened = await sock.next_frame()
        assert (opcode, opened[:1]) == (TEXT, b"0"), opened  # Engine.IO's OPEN
        return sock

    async def next_frame(self) -> tuple[int, bytes]:
        return (await self.next_frame_raw())[1:]

    async def next_frame_raw(self) -> tuple[int, int, bytes]:
        """The next frame as (first byte: FIN, RSV and opcode; opcode; payload)."""
        async with asyncio.timeout(WAIT_S):
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return b0, b0 & 0x0F, await self.reader.readexactly(n)

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def answer(self) -> Answer:
        """Every frame until the server closes (or, if it keeps the connection, until it goes quiet)."""
        frames: list[tuple[int, bytes]] = []
        try:
            while True:
                opcode, payload = await self.next_frame()
                if opcode == CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    # After its close frame the server hangs up: nothing more may follow.
                    with contextlib.suppress(ConnectionError):
                        assert await asyncio.wait_for(self.reader.read(), WAIT_S) == b""
                    return Answer(frames, code, True)
                frames.append((opcode, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            return Answer(frames, None, True)

    async def until(self, opcode: int) -> bytes:
        """The payload of the next frame of this opcode (skipping Engine.IO pings and such)."""
        while True:
            got, payload = await self.next_frame()
            assert got != CLOSE, f"closed with {payload!r} while waiting for opcode {opcode}"
            if got == opcode:
                return payload

    def close(self) -> None:
        self.writer.close()


def _port(api: ApiClient) -> int:
    assert api.http.port is not None
    return int(api.http.port)


async def exchange(api: ApiClient, *frames: bytes) -> Answer:
    sock = await RawSocket.open(_port(api))
    try:
        sock.send(*frames)
        return await sock.answer()
    finally:
        sock.close()


# --- Autobahn 2.x, 3.x, 4.x, 5.x, 6.x, 7.x: refused with the right close code -------------------------

INVALID_UTF8 = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"  # 6.3.1

REFUSED: list[tuple[str, list[bytes], int]] = [
    ("2.5 ping of 126 bytes", [frame(PING, b"x" * 126)], 1002),
    ("3.1 RSV1 set", [frame(TEXT, b"3", rsv=4)], 1002),
    ("3.2 RSV2 set", [frame(TEXT, b"3", rsv=2)], 1002),
    ("3.3 RSV3 set", [frame(TEXT, b"3", rsv=1)], 1002),
    ("3.7 RSV on a ping", [frame(PING, b"", rsv=7)], 1002),
    *[(f"4.1 reserved data opcode {op}", [frame(op, b"3")], 1002) for op in (3, 4, 5, 6, 7)],
    *[(f"4.2 reserved control opcode {op:#x}", [frame(op, b"")], 1002) for op in (0xB, 0xC, 0xD, 0xE, 0xF)],
    ("5.1 fragmented ping", [frame(PING, b"frag1", fin=False), frame(CONT, b"frag2")], 1002),
    ("5.2 fragmented pong", [frame(PONG, b"frag1", fin=False), frame(CONT, b"frag2")], 1002),
    ("5.9 continuation with nothing to continue", [frame(CONT, b"3")], 1002),
    ("5.18 a new message inside a fragmented one", [frame(TEXT, b"3", fin=False), frame(TEXT, b"3")], 1002),
    ("unmasked client frame", [frame(TEXT, b"3", masked=False)], 1002),
    ("6.3.1 invalid UTF-8 in a text frame", [frame(TEXT, INVALID_UTF8)], 1007),
    # 6.4.1: the second fragment makes the text invalid; the third is never sent (fail fast).
    ("6.4.1 invalid UTF-8 in a middle fragment",
     [frame(TEXT, INVALID_UTF8[:11], fin=False), frame(CONT, b"\xf4\x90\x80\x80", fin=False)], 1007),
    ("7.3.2 close with a 1-byte payload", [frame(CLOSE, b"a")], 1002),
    ("7.3.6 close with a 124-byte reason", [frame(CLOSE, close_payload(1000, b"*" * 124))], 1002),
    # 7.5.1 accepts 1002 or 1007; wsproto answers 1007 (the payload is not UTF-8).
    ("7.5.1 close reason not UTF-8", [frame(CLOSE, close_payload(1000, INVALID_UTF8))], 1007),
    *[(f"7.9 invalid close code {code}", [frame(CLOSE, close_payload(code))], 1002)
      for code in (0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999)],
]  # fmt: skip


@pytest.mark.parametrize(("frames", "code"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
async def test_frames_that_break_rfc_6455_close_with_the_code_it_prescribes(
    api: ApiClient, frames: list[bytes], code: int
) -> None:
    answer = await exchange(api, *frames)
    assert answer.close_code == code
    assert [op for op, _ in answer.frames if op == PONG] == []  # nothing of it was taken for valid


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999])
async def test_a_valid_close_code_is_echoed(api: ApiClient, code: int) -> None:  # Autobahn 7.7.x
    answer = await exchange(api, frame(CLOSE, close_payload(code, b"bye")))
    assert answer.close_code == code


async def test_an_empty_close_is_answered_with_an_empty_close(api: ApiClient) -> None:  # Autobahn 7.3.1
    answer = await exchange(api, frame(CLOSE))
    assert answer.closed and answer.close_code is None


@pytest.mark.parametrize("payload", [b"", b"Hello, world!", bytes(range(125))], ids=["empty", "text", "125-bytes"])
async def test_pings_are_answered_with_their_payload(api: ApiClient, payload: bytes) -> None:  # Autobahn 2.1-2.4
    sock = await RawSocket.open(_port(api))
    try:
        sock.send(frame(PING, payload))
        assert await sock.until(PONG) == payload
    finally:
        sock.close()


# --- fragmented messages arrive whole (5.x, 6.2.x) ------------------------------------------------------


def fragments(message: bytes, cuts: list[int], opcode: int = TEXT) -> list[bytes]:
    """``message`` as frames cut at ``cuts`` (byte offsets), the first with ``opcode``."""
    bounds = [0, *cuts, len(message)]
    parts = [message[a:b] for a, b in itertools.pairwise(bounds)]
    return [frame(opcode if i == 0 else CONT, part, fin=i == len(parts) - 1) for i, part in enumerate(parts)]


async def test_a_fragmented_message_with_pings_between_arrives_whole(api: ApiClient) -> None:
    """Autobahn 5.6-5.8 and 6.2.3: fragments (one cut inside a UTF-8 character), pings among them."""
    user = await api.user()
    connect = ("40" + json.dumps({"token": user.token, "note": "κόσμε"}, ensure_ascii=False)).encode()
    cut = connect.index("κ".encode()) + 1  # inside the two bytes of "κ"
    parts = fragments(connect, [5, cut])
    sock = await RawSocket.open(_port(api))
    try:
        sock.send(parts[0], frame(PING, b"a"), parts[1], frame(PING, b"b"), parts[2])
        assert await sock.until(PONG) == b"a"
        assert await sock.until(PONG) == b"b"
        connected = await sock.until(TEXT)
        assert connected.startswith(b"40{") and b"sid" in connected  # the Socket.IO connect went through
    finally:
        sock.close()


# --- 9.x: limits --------------------------------------------------------------------------------------


async def test_a_message_at_the_size_limit_in_several_fragments_is_taken(api: ApiClient) -> None:
    user = await api.user()
    head = ("40" + json.dumps({"token": user.token, "pad": ""})[:-2]).encode()
    connect = head + b"x" * (MAX_PACKET_BYTES - len(head) - 2) + b'"}'
    assert len(connect) == MAX_PACKET_BYTES
    sock = await RawSocket.open(_port(api))
    try:
        sock.send(*fragments(connect, [1000, 100_000, 200_000]))
        assert (await sock.until(TEXT)).startswith(b"40{")
    finally:
        sock.close()


async def test_a_message_over_the_limit_is_refused_with_1009_its_final_fragment_counted_too(api: ApiClient) -> None:
    almost = MAX_PACKET_BYTES - 10
    answer = await exchange(api, frame(TEXT, b"4" + b"x" * (almost - 1), fin=False), frame(CONT, b"x" * 20))
    assert answer.close_code == 1009


async def test_a_frame_announcing_more_than_the_limit_is_refused_on_its_header(api: ApiClient) -> None:
    header = struct.pack("!BBQ", FIN | TEXT, 0x80 | 127, MAX_PACKET_BYTES + 1) + b"\0\0\0\0"
    answer = await exchange(api, header)  # no payload follows: the header alone is enough to refuse
    assert answer.close_code == 1009


async def test_a_message_in_more_frames_than_allowed_is_refused_with_1009(api: ApiClient) -> None:
    limit = api.app[SETTINGS].ws_max_fragments
    within = fragments(b"3" * limit, list(range(1, limit)))  # the limit itself is fine: a PONG in 64 frames
    sock = await RawSocket.open(_port(api))
    try:
        sock.send(*within)
        sock.send(frame(PING, b"still here"))
        assert await sock.until(PONG) == b"still here"
    finally:
        sock.close()
    over = fragments(b"3" * (limit + 1), list(range(1, limit + 1)))
    answer = await exchange(api, *over)
    assert answer.close_code == 1009


async def test_a_flood_of_empty_continuation_frames_costs_its_sender_the_connection_only(api: ApiClient) -> None:
    """Issue 12, item 1: ~150 KB of empty non-final continuation frames, before any login, used to stall the
    event loop for seconds (each one re-summed every fragment so far). The sender is cut off at the
    fragment limit, and a logged-in user on the same server is answered throughout."""
    alice = await api.user()
    fine = await open_tab(api, alice)
    room = await make_room(api, alice)
    flood = frame(TEXT, b"4", fin=False) + frame(CONT, b"", fin=False) * 25_000
    sock = await RawSocket.open(_port(api))
    try:
        with contextlib.suppress(ConnectionError):
            sock.send(flood)
            await sock.writer.drain()
        answer = await sock.answer()
        assert answer.closed  # with 1009, or reset while the rest of the flood was still on its way
        assert answer.close_code in (1009, None)
        for _ in range(3):
            await fine.ok("room:leave", {"room_id": room})
    finally:
        sock.close()
        await fine.close()
