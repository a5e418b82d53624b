"""The room emit's writers (realtime/sendmany.py): the C call, its Python twin and plain ``transport.write``.

Whichever writes, a client must not be able to tell: every message, whole, in order, also to a client
that stopped reading for a while (its socket full: the frame goes out in part and the rest waits in
asyncio's buffer), and a client that stops reading for good is still cut off at ``STUDYHALL_WS_MAX_BUFFER``.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import socketio

from bench.lightclient import LightClient, connect
from realtime import sendmany
from realtime.app import create_app
from realtime.sockets import SOCKETS
from tests.chat_helpers import WAIT_S
from tests.conftest import ApiClient, make_settings

WRITERS = ["c", "python", "transport"]
MESSAGES = 700


async def _server(aiohttp_client: Any, database_url: str, tmp_path: Path, **settings: Any) -> tuple[ApiClient, int]:
    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, **settings))))
    port = api.http.port
    assert port is not None
    return api, int(port)


def _sids(sockets: Any, user_id: str) -> list[str]:
    """The Socket.IO sessions of a user on this node."""
    return [s for s, sess in sockets.sessions.items() if str(sess["user"].id) == user_id]


async def _enter(sockets: Any, room: str, *user_ids: str) -> None:
    """Put the users' connections into ``room`` (each has one)."""
    for user_id in user_ids:
        (sid,) = _sids(sockets, user_id)
        await sockets.sio.enter_room(sid, room)


async def _soon(condition: Callable[[], object]) -> None:
    """Wait (at most WAIT_S) for ``condition()``; the assertion after it says what was not met."""
    for _ in range(WAIT_S * 20):
        if condition():
            return
        await asyncio.sleep(0.05)


def test_the_c_writer_is_built_and_is_the_default(tmp_path: Path) -> None:
    # scripts/setup builds it (setup.py); were it missing, room emits would quietly run the slower loop.
    assert sendmany.send_frame_c is not None
    assert sendmany.pick_writer("c") is sendmany.send_frame_c
    assert make_settings("postgresql://unused", tmp_path).ws_fanout_writer == "c"


async def test_both_loops_tell_the_same_transports_apart() -> None:
    """Written whole, not written (bytes waiting, closing), and a socket that errors: C and Python agree."""
    assert sendmany.send_frame_c is not None
    loop = asyncio.get_running_loop()
    if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
        pytest.skip("uvloop's transports are written with transport.write (TEST_EVENT_LOOP=uvloop)")
    got: list[bytearray] = []

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            got.append(bytearray())
            self.mine = got[-1]

        def data_received(self, data: bytes) -> None:
            self.mine += data

    server = await loop.create_server(Sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transports = []
    for _ in range(4):
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        assert sendmany.direct_transport(transport) is transport
        transports.append(transport)
    try:
        for attempt, send_frame in enumerate((sendmany.send_frame_c, sendmany.send_frame_py)):
            transports[1]._buffer.extend(b"waiting")
            transports[2]._closing = True
            sock = transports[3].get_extra_info("socket")
            sock.shutdown(socket.SHUT_WR)  # its next send fails (EPIPE)
            frame = f"frame {attempt}".encode()
            assert send_frame(transports, frame) == [(1, 0), (2, 0), (3, -1)]
            transports[1]._buffer.clear()
            transports[2]._closing = False
        assert send_frame([], b"x") == []
        for _ in range(100):
            if bytes(got[0]) == b"frame 0frame 1":
                break
            await asyncio.sleep(0.01)
        assert bytes(got[0]) == b"frame 0frame 1"
        assert [bytes(g) for g in got[1:]] == [b"", b"", b""]
    finally:
        for transport in transports:
            transport.abort()
        server.close()


@pytest.mark.parametrize("writer", WRITERS)
async def test_a_client_that_pauses_reading_gets_every_message_in_order(
    writer: str, aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api, port = await _server(aiohttp_client, database_url, tmp_path, ws_fanout_writer=writer, ws_max_buffer=32 << 20)
    alice, bob = await api.user(), await api.user()
    seen: dict[str, list[int]] = {"paused": [], "reading": []}

    def counter(name: str) -> Any:
        def on_event(packet: bytes) -> None:
            event, data = json.loads(packet[2:])
            if event == "bench:blob":
                assert data["blob"] == "y" * 30_000  # whole: no frame cut or interleaved
                seen[name].append(data["n"])

        return on_event

    paused: LightClient = await connect("127.0.0.1", port, alice.token, on_event=counter("paused"))
    reading: LightClient = await connect("127.0.0.1", port, bob.token, on_event=counter("reading"))
    sockets = api.app[SOCKETS]
    try:
        assert paused.transport is not None
        paused.transport.pause_reading()  # (its socket keeps its usual buffer: a shrunk one recovers slowly)
        await _enter(sockets, "blob-room", alice.id, bob.id)
        for n in range(MESSAGES):  # 21 MB: more than the kernel's buffers for one connection take
            await sockets.emit("bench:blob", {"n": n, "blob": "y" * 30_000}, to="blob-room")
        # What the paused client's socket could not take waits in the server's buffer for it.
        held = [ws.transport.get_write_buffer_size() for ws in sockets.direct.by_eio_sid.values() if ws.transport]
        assert max(held) > 100_000
        await _soon(lambda: len(seen["reading"]) == MESSAGES)
        assert seen["reading"] == list(range(MESSAGES))
        paused.transport.resume_reading()
        await _soon(lambda: len(seen["paused"]) == MESSAGES)
        assert seen["paused"] == list(range(MESSAGES))
        assert sockets.direct.slow_consumers_cut == 0
    finally:
        paused.close()
        reading.close()


@pytest.mark.parametrize("writer", ["c", "python"])
async def test_a_client_that_stops_reading_is_still_cut_off(
    writer: str, aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api, port = await _server(aiohttp_client, database_url, tmp_path, ws_max_buffer=64 * 1024, ws_fanout_writer=writer)
    alice, bob = await api.user(), await api.user()
    stuck: LightClient = await connect("127.0.0.1", port, alice.token)
    got: list[int] = []
    fine: LightClient = await connect(
        "127.0.0.1", port, bob.token, on_event=lambda p: got.append(1) if b"bench:blob" in p else None
    )
    sockets = api.app[SOCKETS]
    try:
        assert stuck.transport is not None
        stuck.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.transport.pause_reading()
        await _enter(sockets, "blob-room", alice.id, bob.id)
        sent = 0
        for _ in range(400):
            await sockets.emit("bench:blob", {"blob": "z" * 20_000}, to="blob-room")
            sent += 1
            if sockets.direct.slow_consumers_cut:
                break
            await asyncio.sleep(0)  # the reading client reads between the emits
        assert sockets.direct.slow_consumers_cut == 1
        await _soon(lambda: len(got) == sent)
        assert len(got) == sent  # the other client never noticed
    finally:
        stuck.close()
        fine.close()


@pytest.mark.parametrize("writer", ["c", "transport"])
async def test_a_kept_plan_follows_the_room_as_people_come_and_go(
    writer: str, aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    """Room emits keep who-gets-what per room (FastEmit._plan) until rooms or connections change."""
    api, port = await _server(aiohttp_client, database_url, tmp_path, ws_fanout_writer=writer)
    sockets = api.app[SOCKETS]
    manager = sockets.sio.manager
    manager.plan_min_members = 1  # (16 in production: these rooms are small)
    users = [await api.user() for _ in range(3)]
    got: dict[int, list[int]] = {0: [], 1: [], 2: [], 3: []}

    def collect(i: int) -> Any:
        def on_event(packet: bytes) -> None:
            event, data = json.loads(packet[2:])
            if event == "bench:n":
                got[i].append(data)

        return on_event

    async def emit(n: int, *, reaching: tuple[int, ...]) -> None:
        """Emit ``n`` and wait until it reached those clients (that no one else got it, the end checks)."""
        await sockets.emit("bench:n", n, to="plan-room")
        await _soon(lambda: all(n in got[i] for i in reaching))

    clients = [await connect("127.0.0.1", port, u.token, on_event=collect(i)) for i, u in enumerate(users[:2])]
    polling = socketio.AsyncClient(reconnection=False)
    polling.on("bench:n", lambda n: got[3].append(n))
    try:
        await _enter(sockets, "plan-room", users[0].id, users[1].id)
        await emit(1, reaching=(0, 1))
        plan = manager._plans.get(("/", "plan-room", False))
        assert plan is not None and len(plan.raws) + len(plan.plain) == 2
        if writer == "transport":
            assert plan.raws == [] and len(plan.plain) == 2  # each through its own transport.write
        elif isinstance(asyncio.get_running_loop(), asyncio.selector_events.BaseSelectorEventLoop):
            assert len(plan.raws) == 2  # both on the one call
            assert sockets.direct.send_frame is sendmany.send_frame_c
        await emit(2, reaching=(0, 1))
        assert manager._plans.get(("/", "plan-room", False)) is plan  # nothing changed: the same plan
        clients.append(await connect("127.0.0.1", port, users[2].token, on_event=collect(2)))
        await _enter(sockets, "plan-room", users[2].id)
        await emit(3, reaching=(0, 1, 2))  # the newcomer gets it
        (left,) = _sids(sockets, users[1].id)
        await sockets.sio.leave_room(left, "plan-room")
        await emit(4, reaching=(0, 2))  # the one who left does not
        clients[0].close()
        await _soon(lambda: not _sids(sockets, users[0].id))
        await emit(5, reaching=(2,))  # the one who hung up is gone; the others carry on
        poll_user = await api.user()
        await polling.connect(
            f"http://127.0.0.1:{port}", auth={"token": poll_user.token}, transports=["polling"], wait_timeout=5
        )
        await _enter(sockets, "plan-room", poll_user.id)
        await emit(6, reaching=(2, 3))  # long-polling members are in the plan too
        assert got == {0: [1, 2, 3, 4], 1: [1, 2, 3], 2: [3, 4, 5, 6], 3: [6]}
    finally:
        for c in clients:
            c.close()
        await polling.disconnect()
