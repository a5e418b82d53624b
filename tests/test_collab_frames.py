"""``/yjs`` on the connection takeover (``realtime.fastws.BinaryWebSocket``): its frame layer against
RFC 6455, case by case, as ``tests/test_websocket_frames.py`` checks the Socket.IO websockets, plus what is
particular to the endpoint: a text message closes with 1003, a message over
``STUDYHALL_COLLAB_MAX_MESSAGE_BYTES`` is refused on its header (1009), shutdown closes every editor with
1001, and ``STUDYHALL_YJS_TAKEOVER=false`` (aiohttp's websocket) still serves editors.

Each case opens a raw websocket to ``/yjs/<workspace>?token=`` as a real editor, writes hand-made frames
and reads what the server answers.
"""

from __future__ import annotations

import asyncio
import random
import struct
import uuid
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from collab_ide.handlers import DOCUMENTS, YJS_ENGINE, YJS_SOCKETS
from collab_ide.protocol import Kind, decode, update_message
from core_api.settings import Settings
from realtime.app import create_app
from tests.conftest import Actor, ApiClient, make_settings
from tests.test_collab import base_of, join, ok
from tests.test_websocket_frames import (
    BINARY,
    CLOSE,
    CONT,
    INVALID_UTF8,
    PING,
    PONG,
    TEXT,
    Answer,
    RawSocket,
    close_payload,
    frame,
)
from tests.yclient import YClient

MAX_MESSAGE = 8 * 1024


class RawYjs(RawSocket):
    @classmethod
    async def open_yjs(cls, port: int, workspace_id: str, token: str) -> RawYjs:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /yjs/{workspace_id}?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"permessage-deflate" not in head.lower()  # declined
        sock = cls(reader, writer, head)
        opcode, greeting = await sock.next_frame()
        assert opcode == BINARY and decode(greeting)[0] is Kind.SYNC_STEP1  # the server's sync step 1
        return sock

    async def answer(self) -> Answer:
        """Every frame until the server's close frame, which is answered as clients do (the server waits
        for that answer before it hangs up, RFC 6455 7.1.1)."""
        frames: list[tuple[int, bytes]] = []
        try:
            while True:
                opcode, payload = await self.next_frame()
                if opcode == CLOSE:
                    self.send(frame(CLOSE, payload[:2]))
                    assert await asyncio.wait_for(self.reader.read(), 20) == b""
                    return Answer(frames, struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None, True)
                frames.append((opcode, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            return Answer(frames, None, True)


@pytest.fixture
def frame_settings(database_url: str, tmp_path: Any) -> Settings:
    return make_settings(database_url, tmp_path, collab_max_message_bytes=MAX_MESSAGE, ws_max_fragments=8)


@pytest.fixture
async def api(aiohttp_client: Any, frame_settings: Settings) -> ApiClient:
    return ApiClient(await aiohttp_client(create_app(frame_settings)))


def port_of(api: ApiClient) -> int:
    assert api.http.port is not None
    return int(api.http.port)


async def workspace(api: ApiClient) -> tuple[Actor, str]:
    alice = await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    return alice, ws["id"]


def an_update(text: str) -> bytes:
    """A real Yjs update that adds ``files["frames.txt"]`` holding ``text``."""
    doc: Doc[Any] = Doc()
    doc.get("files", type=Map)["frames.txt"] = Text(text)
    return doc.get_update()


async def exchange(api: ApiClient, *frames: bytes) -> Answer:
    alice, wid = await workspace(api)
    sock = await RawYjs.open_yjs(port_of(api), wid, alice.token)
    try:
        sock.send(*frames)
        return await sock.answer()
    finally:
        sock.close()


REFUSED: list[tuple[str, list[bytes], int]] = [
    ("2.5 ping of 126 bytes", [frame(PING, b"x" * 126)], 1002),
    ("3.1 RSV1 set", [frame(BINARY, b"\x03", rsv=4)], 1002),
    ("3.3 RSV3 set", [frame(BINARY, b"\x03", rsv=1)], 1002),
    *[(f"4.1 reserved data opcode {op}", [frame(op, b"\x03")], 1002) for op in (3, 7)],
    *[(f"4.2 reserved control opcode {op:#x}", [frame(op, b"")], 1002) for op in (0xB, 0xF)],
    ("5.1 fragmented ping", [frame(PING, b"frag1", fin=False), frame(CONT, b"frag2")], 1002),
    ("5.9 continuation with nothing to continue", [frame(CONT, b"\x03")], 1002),
    ("5.18 a new message inside a fragmented one", [frame(BINARY, b"\x00", fin=False), frame(BINARY, b"\x03")], 1002),
    ("unmasked client frame", [frame(BINARY, b"\x03", masked=False)], 1002),
    ("6.3.1 invalid UTF-8 in a text frame", [frame(TEXT, INVALID_UTF8)], 1007),
    ("a text message: y-websocket speaks binary", [frame(TEXT, b"hello")], 1003),
    ("7.3.2 close with a 1-byte payload", [frame(CLOSE, b"a")], 1002),
    ("7.9 invalid close code", [frame(CLOSE, close_payload(1005))], 1002),
    ("malformed y-websocket message", [frame(BINARY, b"\x00\x02\x05abc")], 1002),
    ("unknown message type", [frame(BINARY, b"\x07")], 1003),
    ("message over the limit, refused on its header", [frame(BINARY, b"\x00" * (MAX_MESSAGE + 1))[:64]], 1009),
    ("message over the limit in fragments, the last one counted too",
     [frame(BINARY, b"\x00" * (MAX_MESSAGE // 2), fin=False), frame(CONT, b"\x00" * (MAX_MESSAGE // 2 + 1))], 1009),
    ("message in more frames than allowed", [*(frame(BINARY if i == 0 else CONT, b"", fin=False) for i in range(9))],
     1009),
]  # fmt: skip


@pytest.mark.parametrize(("case", "frames", "code"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_frames_that_break_the_rules_close_with_the_code_for_them(
    api: ApiClient, case: str, frames: list[bytes], code: int
) -> None:
    answer = await exchange(api, *frames)
    assert answer.close_code == code, (case, answer)


async def test_pings_are_answered_and_a_fragmented_update_with_a_ping_between_reaches_the_others(
    api: ApiClient,
) -> None:
    alice, wid = await workspace(api)
    watcher = YClient()
    try:
        await watcher.connect(base_of(api), wid, alice.token)
        await watcher.wait_synced()
        sock = await RawYjs.open_yjs(port_of(api), wid, alice.token)
        sock.send(frame(PING, b"are you there"))
        assert await sock.until(PONG) == b"are you there"
        message = update_message(an_update("sent in three frames"))
        third = len(message) // 3
        sock.send(
            frame(BINARY, message[:third], fin=False),
            frame(PING, b"between"),
            frame(CONT, message[third : 2 * third], fin=False),
            frame(CONT, message[2 * third :]),
        )
        assert await sock.until(PONG) == b"between"
        await watcher.wait_until(lambda: watcher.text("frames.txt") == "sent in three frames")
        # The client's close is echoed with its code.
        sock.send(frame(CLOSE, close_payload(1000, b"bye")))
        assert (await sock.answer()).close_code == 1000
        assert watcher.close_code is None
    finally:
        await watcher.close()


async def test_many_updates_in_one_write_are_all_applied_in_order(api: ApiClient) -> None:
    alice, wid = await workspace(api)
    watcher = YClient()
    try:
        await watcher.connect(base_of(api), wid, alice.token)
        await watcher.wait_synced()
        sock = await RawYjs.open_yjs(port_of(api), wid, alice.token)
        doc: Doc[Any] = Doc()
        updates: list[bytes] = []
        doc.observe(lambda event: updates.append(event.update))
        doc.get("files", type=Map)["burst.txt"] = Text()
        text = doc.get("files", type=Map)["burst.txt"]
        for i in range(300):  # more than one turn's worth of frames: the rest wait for the next turn
            text.insert(len(text), f"{i % 10}")
        sock.send(*(frame(BINARY, update_message(u)) for u in updates))
        expected = str(text)
        await watcher.wait_until(lambda: watcher.text("burst.txt") == expected)
        sock.close()
    finally:
        await watcher.close()


async def test_shutdown_closes_every_editor_with_1001_and_they_leave_their_documents(api: ApiClient) -> None:
    alice, wid = await workspace(api)
    editors = [YClient(), YClient()]
    try:
        for e in editors:
            await e.connect(base_of(api), wid, alice.token)
            await e.wait_synced()
        app = api.http.app
        assert app is not None
        doc = app[DOCUMENTS].docs[uuid.UUID(wid)]
        assert len(doc.peers) == 2
        sockets = app[YJS_ENGINE] if YJS_ENGINE in app else app[YJS_SOCKETS]
        await sockets.hang_up()  # what the app's shutdown does first
        for e in editors:
            code, reason = await e.wait_closed()
            assert code == 1001, (code, reason)
        assert doc.peers == []
    finally:
        for e in editors:
            await e.close()


async def test_with_the_takeover_off_editors_still_converge_on_aiohttps_websocket(
    aiohttp_client: Any, database_url: str, tmp_path: Any
) -> None:
    settings = make_settings(database_url, tmp_path, yjs_takeover=False, yjs_engine="python")
    app = create_app(settings)
    assert YJS_SOCKETS not in app
    api = ApiClient(await aiohttp_client(app))
    alice = await api.user()
    ws = await ok(api, "POST", "/workspaces", alice, 201, json={"name": "W", "language": "python"})
    clients: list[YClient] = []
    try:
        a = await join(clients, api, ws["id"], alice)
        b = await join(clients, api, ws["id"], alice)
        a.edit("main.py", 0, insert="# from a\n")
        await b.wait_until(lambda: b.text("main.py").startswith("# from a\n"))
        b.send_raw(b"\x07")
        assert (await b.wait_closed())[0] == 1003
    finally:
        for c in clients:
            await c.close()


async def test_frames_cut_anywhere_across_reads_arrive_whole(api: ApiClient) -> None:
    alice, wid = await workspace(api)
    watcher = YClient()
    try:
        await watcher.connect(base_of(api), wid, alice.token)
        await watcher.wait_synced()
        sock = await RawYjs.open_yjs(port_of(api), wid, alice.token)
        doc: Doc[Any] = Doc()
        updates: list[bytes] = []
        doc.observe(lambda event: updates.append(event.update))
        doc.get("files", type=Map)["cut.txt"] = Text("x" * 300)  # a frame with a 16-bit length
        text = doc.get("files", type=Map)["cut.txt"]
        text.insert(0, "a")
        text.insert(0, "b")
        stream = b"".join(frame(BINARY, update_message(u)) for u in updates)
        for i in range(len(stream)):  # one byte per write, each read on its own
            sock.send(stream[i : i + 1])
            await sock.writer.drain()
            if i % 50 == 0:
                await asyncio.sleep(0.001)
        await watcher.wait_until(lambda: watcher.text("cut.txt") == "ba" + "x" * 300)
        sock.close()
    finally:
        await watcher.close()


def garbage(rng: random.Random) -> bytes:
    """What a broken or hostile client might send: frames with random headers (opcodes, RSV bits, FIN,
    masking, 7/16/64-bit lengths that lie, control frames too long or fragmented), y-websocket messages
    with random bodies, cut-off frames, and plain noise."""
    out = bytearray()
    for _ in range(rng.randint(1, 6)):
        kind = rng.randrange(5)
        body = rng.randbytes(rng.choice([0, 1, 3, 20, 125, 126, 300, 9000]))
        if kind == 0:  # noise
            out += rng.randbytes(rng.randint(1, 40))
        elif kind == 1:  # a frame whose header says anything
            b0 = rng.randrange(256)
            length = rng.choice([len(body), rng.randrange(2**16), rng.randrange(2**63), 126, 127])
            mask = rng.random() < 0.9
            if length < 126:
                out += bytes((b0, length | (0x80 if mask else 0)))
            elif length < 65536:
                out += bytes((b0, 126 | (0x80 if mask else 0))) + struct.pack("!H", length)
            else:
                out += bytes((b0, 127 | (0x80 if mask else 0))) + struct.pack("!Q", length)
            out += (rng.randbytes(4) if mask else b"") + body
        elif kind == 2:  # a well-framed message of a y-websocket type with a random body
            out += frame(BINARY, bytes([rng.randrange(4), rng.randrange(4)]) + body[:200])
        elif kind == 3:  # a fragment, maybe never finished
            out += frame(rng.choice([BINARY, CONT, TEXT, PING]), body[:500], fin=rng.random() < 0.5)
        else:  # a frame cut short
            out += frame(BINARY, body)[: rng.randint(1, 12)]
    return bytes(out)


async def test_random_bytes_on_the_wire_end_only_their_own_connections(api: ApiClient) -> None:
    """300 connections send garbage (on the compiled engine, the default, its frame parser is C): each ends
    or stays as the protocol says, the node keeps serving, and an editor who was there all along still
    gets a document that converges with a newcomer's."""
    rng = random.Random(11)
    alice, wid = await workspace(api)
    editor = YClient()
    newcomer = YClient()
    try:
        await editor.connect(base_of(api), wid, alice.token)
        await editor.wait_synced()

        async def one(seed: int) -> None:
            sock = await RawYjs.open_yjs(port_of(api), wid, alice.token)
            try:
                sock.send(garbage(random.Random(seed)))
                await asyncio.sleep(0.01)
            finally:
                sock.writer.close()

        for _ in range(6):
            await asyncio.gather(*(one(rng.randrange(2**32)) for _ in range(50)))
        editor.files["after.txt"] = Text("still here")
        await newcomer.connect(base_of(api), wid, alice.token)
        await newcomer.wait_synced()
        await newcomer.wait_until(lambda: newcomer.text("after.txt") == "still here")
        doc = api.app[DOCUMENTS].docs[uuid.UUID(wid)]
        for _ in range(200):  # the garbage connections have all left the document
            if len(doc.peers) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(doc.peers) == 2
    finally:
        await editor.close()
        await newcomer.close()
