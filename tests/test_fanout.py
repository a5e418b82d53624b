"""Room broadcasts on the shared-frame path (realtime/fastws.py) and presence in large rooms.

The fast path must be invisible to clients: the same packets, in the same order, to websocket and
long-polling clients alike. These tests also pin what it adds: a client that stops reading is cut off
instead of growing the server's memory, the stock per-message deflate path still works, and large rooms
get their presence changes in batches.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
import socketio

from bench.lightclient import LightClient, _client_frame, connect
from realtime.app import create_app
from realtime.sockets import MAX_PACKET_BYTES, SOCKETS
from tests.chat_helpers import WAIT_S, make_room, open_tab, server_url
from tests.conftest import ApiClient, make_settings


def _port(api: ApiClient) -> int:
    port = api.http.port
    assert port is not None
    return int(port)


async def test_broadcasts_reach_websocket_and_polling_clients_alike_and_in_order(api: ApiClient, tabs: Any) -> None:
    host, ws_user, poll_user = await api.user(), await api.user(), await api.user()
    room = await make_room(api, host, ws_user, poll_user)
    sender, on_ws = await tabs(host), await tabs(ws_user)
    await sender.join(room)
    await on_ws.join(room)

    polling = socketio.AsyncClient(reconnection=False)
    got_polling: list[int] = []
    polling.on("chat:message", lambda m: got_polling.append(m["seq"]))
    await polling.connect(server_url(api), auth={"token": poll_user.token}, transports=["polling"], wait_timeout=5)
    try:
        assert (await polling.call("room:join", {"room_id": room}, timeout=WAIT_S))["ok"]
        direct = api.app[SOCKETS].direct.by_eio_sid
        assert on_ws.sio.eio.sid in direct  # the websocket client is on the direct writer ...
        assert polling.eio.sid not in direct  # ... the polling one on Engine.IO's queue

        sent = [(await sender.send(room, f"message {i}"))["seq"] for i in range(10)]
        got_ws = [(await on_ws.next("chat:message"))["seq"] for _ in sent]
        for _ in range(100):
            if len(got_polling) >= len(sent):
                break
            await asyncio.sleep(0.05)
        assert got_ws == sent
        assert got_polling == sent
    finally:
        await polling.disconnect()


async def test_a_client_that_stops_reading_is_cut_off_and_the_others_carry_on(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, ws_max_buffer=64 * 1024))))
    alice, bob = await api.user(), await api.user()
    stuck: LightClient = await connect("127.0.0.1", _port(api), alice.token)
    fine = await open_tab(api, bob)
    try:
        assert stuck.transport is not None
        sock = stuck.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.transport.pause_reading()  # a client that no longer reads what it is sent
        sockets = api.app[SOCKETS]
        big = {"blob": "x" * 100_000}
        for _ in range(400):  # 40 MB: more than the kernel's socket buffers and our 64 KiB allowance
            await sockets.emit("bench:blob", big, to=f"user:{alice.id}")
            if stuck.transport.is_closing() or sockets.direct.slow_consumers_cut:
                break
        assert sockets.direct.slow_consumers_cut == 1
        # The server let go of the connection: its session ended (disconnect hooks ran) on this node.
        for _ in range(WAIT_S * 20):
            if not any(sess["user"].id == uuid.UUID(alice.id) for sess in sockets.sessions.values()):
                break
            await asyncio.sleep(0.05)
        assert not any(sess["user"].id == uuid.UUID(alice.id) for sess in sockets.sessions.values())
        # Bob, on the same server, never noticed.
        await fine.ok("room:leave", {"room_id": await make_room(api, bob)})
    finally:
        stuck.close()
        await fine.close()


async def test_the_stock_deflate_path_keeps_its_context_when_enabled(
    api: ApiClient, aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    """``STUDYHALL_WS_DEFLATE=true``: python-engineio's path, with context takeover (the default, shared
    deflate without context takeover, is tests/test_ws_deflate.py's)."""
    user = await api.user()
    deflating = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, ws_deflate=True))))
    got: list[bytes] = []
    client = await connect("127.0.0.1", _port(deflating), user.token, deflate=True, on_event=got.append)
    try:
        assert client.deflate_accepted
        assert "no_context_takeover" not in client.extensions_answer
        await deflating.app[SOCKETS].emit("note", {"text": "squeezed " * 50}, to=f"user:{user.id}")
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        assert got == [b'42["note",{"text":"' + b"squeezed " * 50 + b'"}]']  # inflated back exactly
    finally:
        client.close()


async def test_large_rooms_get_presence_in_batches_and_a_short_member_list(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, presence_batch_above=3, presence_batch_s=2.0, presence_list_max=2)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    users = [await api.user(name=f"user {i}") for i in range(5)]
    room = await make_room(api, users[0], *users[1:])
    watcher = await open_tab(api, users[0])
    batches: asyncio.Queue[Any] = asyncio.Queue()
    watcher.sio.on("room:presence_batch", batches.put)
    others = []
    try:
        await watcher.join(room)
        for user in users[1:3]:  # the room holds 2, then 3: still announced one by one
            tab = await open_tab(api, user)
            others.append(tab)
            await tab.join(room)
        seen = [(await watcher.next("room:presence"))["user"]["id"] for _ in range(2)]
        assert seen == [users[1].id, users[2].id]

        late = await open_tab(api, users[3])  # 4 in the room: now batched
        others.append(late)
        ack = await late.join(room)
        assert ack["member_count"] == 4
        assert len(ack["members"]) == 2
        passing = await open_tab(api, users[4])  # comes and goes within one interval: only its leaving
        rev = (await passing.join(room))["presence_rev"]  # is announced (someone may have listed it)
        await passing.close()

        batch = await asyncio.wait_for(batches.get(), WAIT_S)
        assert batch == {
            "room_id": room,
            "joined": [{"id": users[3].id, "display_name": "user 3", "rev": ack["presence_rev"]}],
            "left": [{"id": users[4].id, "display_name": "user 4", "rev": rev + 1}],
            "rev": rev + 1,
        }
        assert await watcher.nothing_pending("room:presence")
    finally:
        for tab in [watcher, *others]:
            await tab.close()


async def test_clients_that_answer_pings_stay_and_one_that_stops_is_dropped(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, ping_interval_s=1, ping_timeout_s=1)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    alice, bob = await api.user(), await api.user()
    alive = await open_tab(api, alice)  # the official Python client, answering every ping
    hung: LightClient = await connect("127.0.0.1", _port(api), bob.token)
    try:
        hung.answer_pings = False
        await asyncio.wait_for(hung.closed, WAIT_S)  # dropped once a ping went unanswered
        await asyncio.sleep(3.5)  # several more ping rounds
        assert alive.sio.connected
        await alive.ok("room:leave", {"room_id": await make_room(api, alice)})
    finally:
        hung.close()
        await alive.close()


async def test_malformed_frames_cost_the_sender_its_connection_and_one_log_line(
    api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = await api.user(), await api.user()
    fine = await open_tab(api, bob)
    try:
        # (Invalid UTF-8 in a text frame is refused by the websocket layer itself, with close code 1007.)
        for bad in (b"zz", b"4", b'42["x",', b"40{bad", b"4\xff\xfe"):
            caplog.clear()
            client = await connect("127.0.0.1", _port(api), alice.token)
            assert client.transport is not None
            client.transport.write(_client_frame(bad))
            await asyncio.wait_for(client.closed, WAIT_S)  # the server hung up on it
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
            assert errors == [], [r.getMessage() for r in errors]
            if bad.isascii():
                assert any("malformed packet" in r.getMessage() for r in caplog.records), bad
        await fine.ok("room:leave", {"room_id": await make_room(api, bob)})  # the others carry on
    finally:
        await fine.close()


async def test_websocket_protocol_violations_close_the_connection_quietly(
    api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The direct websocket parses client frames itself: RFC 6455 violations end that connection only."""
    alice, bob = await api.user(), await api.user()
    fine = await open_tab(api, bob)
    oversize = bytes([0x81, 0x80 | 127]) + (MAX_PACKET_BYTES + 1).to_bytes(8, "big") + b"\0\0\0\0"
    try:
        for bad in (
            b"\x81\x012",  # not masked
            _client_frame(b"2", 0x0),  # a continuation with nothing to continue
            bytes([0xC1]) + _client_frame(b"2")[1:],  # RSV1: compressed, but no extension was agreed
            oversize,  # announces more than the largest packet
            _client_frame(b"2", 0x3),  # a reserved opcode
            _client_frame(b"2", 0xB),  # a reserved control opcode
        ):
            caplog.clear()
            client = await connect("127.0.0.1", _port(api), alice.token)
            assert client.transport is not None
            client.transport.write(bad)
            await asyncio.wait_for(client.closed, WAIT_S)
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
            assert errors == [], [r.getMessage() for r in errors]
        await fine.ok("room:leave", {"room_id": await make_room(api, bob)})  # the others carry on
    finally:
        await fine.close()


async def test_shutdown_closes_direct_websockets_and_runs_their_disconnects(
    aiohttp_client: Any, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp no longer owns direct websockets, so the app itself must hang them up when it stops."""
    client = await aiohttp_client(create_app(make_settings(database_url, tmp_path)))
    api = ApiClient(client)
    alice = await api.user()
    tab = await open_tab(api, alice)
    await tab.join(await make_room(api, alice))  # so leaving has presence and a room to update
    sockets = api.app[SOCKETS]
    assert tab.sio.eio.sid in sockets.direct.by_eio_sid and sockets.sessions
    await client.close()  # the server shuts down
    for _ in range(100):
        if not tab.sio.connected:
            break
        await asyncio.sleep(0.05)
    assert not tab.sio.connected
    assert sockets.sessions == {}  # the disconnect handlers ran (rooms and presence left)
    assert sockets.direct.by_eio_sid == {}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]  # every disconnect handler found its services up
    await tab.close()


async def test_the_python_client_upgrades_from_polling_to_the_direct_websocket(api: ApiClient) -> None:
    """aiohttp's test server cancels a request's handler once its connection is gone (handler_cancellation);
    the upgrade handshake that follows the takeover must not run in that handler, or it is cancelled."""
    user = await api.user()
    client = socketio.AsyncClient(reconnection=False)
    connecting = client.connect(
        server_url(api), auth={"token": user.token}, transports=["polling", "websocket"], wait_timeout=WAIT_S
    )
    await asyncio.wait_for(connecting, WAIT_S)  # (the client itself waits for the probe's answer for ever)
    try:
        assert client.transport() == "websocket"
        assert client.eio.sid in api.app[SOCKETS].direct.by_eio_sid
        assert (await client.call("no:such", {}, timeout=WAIT_S))["ok"] is False
    finally:
        await client.disconnect()


async def test_a_websocket_between_messages_keeps_no_frame_parser(api: ApiClient) -> None:
    """wsproto's parser is a quarter of an idle connection's memory: a connection holds one only while a
    frame arrives (this also guards the look into wsproto's decoder that this relies on)."""
    client: LightClient = await connect("127.0.0.1", _port(api), (await api.user()).token)
    try:
        (ws,) = api.app[SOCKETS].direct.by_eio_sid.values()
        assert ws._ws is None  # the connect was parsed (it was answered), the parser went back to the pool
        assert (await client.call("no:such", {}))["ok"] is False
        assert ws._ws is None
    finally:
        client.close()
