"""Per-message deflate on the Socket.IO websockets (RFC 7692), as realtime/fastws.py takes it.

Browsers and the ``ws`` package offer deflate on every websocket. The server accepts it without context
takeover either way, so a large room emit is compressed once and the same frame goes to every connection
that negotiated it; small messages go out plain; what clients send compressed is inflated in bounded
steps. These tests check what a client sees (the answer to its offer, which frames come compressed, that
every client reads the same bytes) and what an attacker gets (the connection closed, nothing more).
"""

from __future__ import annotations

import asyncio
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from wsproto.frame_protocol import CloseReason, Opcode, RsvBits

from bench.lightclient import LightClient, connect
from realtime import fastws
from realtime.app import create_app
from realtime.sockets import MAX_PACKET_BYTES, SOCKETS
from tests.chat_helpers import WAIT_S, make_room
from tests.conftest import ApiClient, make_settings
from tests.test_websocket_frames import CONT, FIN, PING, PONG, TEXT, RawSocket, frame

ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
CHROME = "permessage-deflate; client_max_window_bits"


def _port(api: ApiClient) -> int:
    assert api.http.port is not None
    return int(api.http.port)


def deflated(payload: bytes) -> bytes:
    """A message body compressed as RFC 7692 has it (raw DEFLATE, sync flush, the 4-byte tail taken off)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)).removesuffix(b"\x00\x00\xff\xff")


RSV1 = 4  # frame()'s rsv argument is the three bits RSV1..RSV3


@pytest.mark.parametrize(
    ("offers", "taken"),
    [
        ([CHROME], True),  # Chromium
        (["permessage-deflate"], True),  # Firefox
        (["permessage-deflate; client_max_window_bits=10; server_no_context_takeover"], True),
        (["permessage-deflate; server_max_window_bits=15"], True),
        (["x-webkit-deflate-frame", "permessage-deflate"], True),  # two headers, the second one taken
        (["permessage-deflate; server_max_window_bits=10, permessage-deflate"], True),  # the fallback offer
        (["permessage-deflate; server_max_window_bits=10"], False),  # frames are shared: one window for all
        (["permessage-deflate; client_max_window_bits=16"], False),
        (["permessage-deflate; client_no_context_takeover=1"], False),
        (["permessage-deflate; client_max_window_bits; client_max_window_bits"], False),
        (["permessage-deflate; mystery_parameter"], False),
        (["x-webkit-deflate-frame"], False),
        ([], False),
    ],
)
def test_which_offers_are_taken(offers: list[str], taken: bool) -> None:
    assert fastws.takes_deflate(offers) is taken


async def test_a_large_room_emit_is_compressed_once_and_every_client_reads_the_same(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, a, b, plain_user = [await api.user() for _ in range(4)]
    room = await make_room(api, sender, a, b, plain_user)
    got: dict[str, list[bytes]] = {"a": [], "b": [], "plain": []}
    port = _port(api)
    writer = await connect("127.0.0.1", port, sender.token)  # offers nothing: its own acks stay plain
    zipped_a = await connect("127.0.0.1", port, a.token, deflate=True, on_event=got["a"].append)
    zipped_b = await connect("127.0.0.1", port, b.token, deflate=True, on_event=got["b"].append)
    plain = await connect("127.0.0.1", port, plain_user.token, on_event=got["plain"].append)
    clients: list[LightClient] = [writer, zipped_a, zipped_b, plain]
    calls: list[int] = []
    real = fastws.deflate_frame

    def counted(payload: bytes, opcode: int = 1, level: int = 1) -> bytes | None:
        calls.append(len(payload))
        return real(payload, opcode, level)

    monkeypatch.setattr(fastws, "deflate_frame", counted)
    try:
        assert zipped_a.extensions_answer == zipped_b.extensions_answer == ANSWER
        assert not writer.deflate_accepted and not plain.deflate_accepted
        for client in clients:
            assert (await client.call("room:join", {"room_id": room}))["ok"]
        for key in got:
            got[key].clear()
        calls.clear()
        long = "\n".join(f"line {i}: the standings moved again" for i in range(100))
        ack = await writer.call("chat:send", {"room_id": room, "body": long, "client_msg_id": "long-1"})
        assert ack["ok"]
        short = await writer.call("chat:send", {"room_id": room, "body": "hi", "client_msg_id": "short-1"})
        assert short["ok"]
        for _ in range(WAIT_S * 50):
            if all(len(v) >= 2 for v in got.values()):
                break
            await asyncio.sleep(0.02)
        messages = [m for m in got["plain"] if b"chat:message" in m[:20]]
        assert [json.loads(m[2:])[1]["body"] for m in messages] == [long, "hi"]
        assert got["a"] == got["b"] == got["plain"]  # the same bytes, inflated
        # The long message was compressed once for both deflating clients; "hi" (under 1 KB) went plain.
        assert len(calls) == 1 and calls[0] > 1024
        assert zipped_a.compressed_received == zipped_b.compressed_received == 1
        assert plain.compressed_received == 0
    finally:
        for client in clients:
            client.close()


async def test_a_client_may_send_compressed_messages_fragmented_with_a_ping_between(api: ApiClient) -> None:
    user = await api.user()
    room = await make_room(api, user)
    sock = await RawSocket.open(_port(api), CHROME)
    try:
        assert f"Sec-WebSocket-Extensions: {ANSWER}".encode() in sock.head
        sock.send(frame(TEXT, deflated(b"40" + json.dumps({"token": user.token}).encode()), rsv=RSV1))
        assert (await sock.until(TEXT)).startswith(b"40{")
        join = deflated(b'421["room:join",' + json.dumps({"room_id": room}).encode() + b"]")
        half = len(join) // 2
        sock.send(
            frame(TEXT, join[:half], fin=False, rsv=RSV1),
            frame(PING, b"between"),
            frame(CONT, join[half:]),
        )
        assert await sock.until(PONG) == b"between"
        b0, _, answer = await sock.next_frame_raw()
        while not answer.startswith(b"431"):
            b0, _, answer = await sock.next_frame_raw()
        assert b0 & 0x40 == 0  # a short ack: sent plain
        assert json.loads(answer[3:])[0]["ok"] is True
    finally:
        sock.close()


async def _closing_code(api: ApiClient, *frames: bytes) -> int | None:
    sock = await RawSocket.open(_port(api), CHROME)
    try:
        sock.send(*frames)
        return (await sock.answer()).close_code
    finally:
        sock.close()


async def test_a_deflate_bomb_costs_its_sender_the_connection_and_no_more(api: ApiClient) -> None:
    """300 KB of one byte compresses to about 300 bytes: inflating it stops at the packet limit (1009)."""
    bomb = deflated(b"4" + b"x" * (MAX_PACKET_BYTES + 50_000))
    assert len(bomb) < 1000
    assert await _closing_code(api, frame(TEXT, bomb, rsv=RSV1)) == 1009
    # Spread over fragments, the limit counts what they inflate to together.
    half = len(bomb) // 2
    assert await _closing_code(api, frame(TEXT, bomb[:half], fin=False, rsv=RSV1), frame(CONT, bomb[half:])) == 1009
    # A gigabyte's worth in one frame changes nothing: the inflating stops at the limit.
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    huge = b"".join(c.compress(b"\0" * (1 << 20)) for _ in range(64)) + c.flush(zlib.Z_SYNC_FLUSH)
    assert await _closing_code(api, frame(TEXT, huge[:-4], rsv=RSV1)) == 1009


def test_inflating_stops_at_the_limit_within_one_call() -> None:
    """wsproto's own extension inflates a frame's bytes in one call: 64 KB of a bomb would become 64 MB
    before any size check. This one stops one byte past the limit."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = b"".join(c.compress(b"\0" * (1 << 20)) for _ in range(64)) + c.flush(zlib.Z_SYNC_FLUSH)
    ext = fastws.BoundedInflate(limit=1000)
    rsv1 = RsvBits(True, False, False)
    assert ext.frame_inbound_header(None, Opcode.TEXT, rsv1, len(bomb)) == rsv1  # type: ignore[arg-type]
    assert ext.frame_inbound_payload_data(None, bomb) is CloseReason.MESSAGE_TOO_BIG  # type: ignore[arg-type]
    assert ext._out <= 1001


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([frame(TEXT, b"\xff\x00not deflate at all", rsv=RSV1)], 1007),
        ([frame(TEXT, deflated(b"\xce\xba\xed\xa0\x80"), rsv=RSV1)], 1007),  # inflates to invalid UTF-8
        ([frame(TEXT, deflated(b"4"), fin=False, rsv=RSV1), frame(CONT, deflated(b"x"), rsv=RSV1)], 1002),
        ([frame(PING, b"", rsv=RSV1)], 1002),  # control frames are never compressed
        ([frame(TEXT, b"3", rsv=2)], 1002),  # RSV2 means nothing here
    ],
    ids=["not deflate", "inflates to invalid UTF-8", "RSV1 on a continuation", "RSV1 on a ping", "RSV2"],
)
async def test_broken_compressed_frames_close_with_the_code_rfc_7692_gives(
    api: ApiClient, frames: list[bytes], code: int
) -> None:
    assert await _closing_code(api, *frames) == code


async def test_a_connection_keeps_no_inflater_between_messages(api: ApiClient) -> None:
    user = await api.user()
    client = await connect("127.0.0.1", _port(api), user.token, deflate=True)
    try:
        payload = b"42" + str(7).encode() + json.dumps(["room:leave", {"room_id": "x" * 2000}]).encode()
        client.send_compressed(payload)
        await asyncio.sleep(0.3)
        direct = api.app[SOCKETS].direct
        (ws,) = [w for w in direct.by_eio_sid.values() if w.deflate]
        assert ws._ws is None  # the parser (and its inflater's state) went back to the pool
        assert all(ext.at_rest() for p in direct._inflating for ext in p._proto.extensions)
    finally:
        client.close()


async def test_deflate_is_declined_when_turned_off(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, ws_compress_min_bytes=0))))
    sock = await RawSocket.open(_port(api), CHROME)
    try:
        assert b"Sec-WebSocket-Extensions" not in sock.head
        sock.send(frame(TEXT, deflated(b"3"), rsv=RSV1))
        assert (await sock.answer()).close_code == 1002  # RSV1 without the extension
    finally:
        sock.close()


def test_a_compressed_frame_decodes_on_its_own() -> None:
    payload = json.dumps({"people": [{"rank": i, "name": f"learner {i}"} for i in range(500)]}).encode()
    made = fastws.deflate_frame(payload)
    assert made is not None and made[0] == FIN | 0x40 | TEXT and len(made) < len(payload) / 4
    header = fastws.frame_header(made, 0)
    assert header is not None
    body = made[header[3] :]
    assert zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == payload
    assert fastws.deflate_frame(b"x") is None  # not worth it: sent plain
