"""Engine.IO sessions against garbage and against floods of sessions that never log in (issue 12, 16 and 17).

Garbage: a packet of an unknown Engine.IO type, an undecodable long-polling body, a Socket.IO binary
placeholder whose attachment never comes. Each closes that one session with at most one log line and no
traceback, over websocket and over long-polling, and the server carries on.

Floods: sessions that have not completed the Socket.IO connect are capped per client address and on the
node (the refusal is an HTTP error a client can read), and expire; ``/metrics`` shows them come and go.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from bench.lightclient import LightClient, _client_frame, connect
from realtime.app import create_app
from realtime.engine import FastPacket
from tests.chat_helpers import WAIT_S, make_room, open_tab, server_url
from tests.conftest import ApiClient, make_settings

METRICS_TOKEN = "metrics-token-" + "t" * 20
POLLING = "/socket.io/?EIO=4&transport=polling"


def _port(api: ApiClient) -> int:
    assert api.http.port is not None
    return int(api.http.port)


def _trouble(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def _open_polling(api: ApiClient, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    """A new long-polling Engine.IO session: (status, sid or error body, response headers)."""
    resp = await api.http.get(POLLING, headers=headers)
    text = await resp.text()
    if resp.status == 200:
        assert text.startswith("0"), text
        return resp.status, json.loads(text[1:])["sid"], dict(resp.headers)
    return resp.status, json.loads(text), dict(resp.headers)


async def _post(api: ApiClient, sid: str, body: bytes) -> int:
    resp = await api.http.post(f"{POLLING}&sid={sid}", data=body, headers={"Content-Type": "text/plain"})
    await resp.read()
    return resp.status


async def _poll(api: ApiClient, sid: str) -> tuple[int, str]:
    resp = await api.http.get(f"{POLLING}&sid={sid}")
    return resp.status, await resp.text()


async def _logged_in_polling_session(api: ApiClient, token: str) -> str:
    status, sid, _ = await _open_polling(api)
    assert status == 200
    assert await _post(api, sid, ("40" + json.dumps({"token": token})).encode()) == 200
    status, text = await _poll(api, sid)
    assert status == 200 and text.startswith("40{"), text  # Socket.IO connected
    return str(sid)


# --- 16: protocol garbage -------------------------------------------------------------------------------


@pytest.mark.parametrize("packet", [b"9", b"8hello", b"0", b"2probe"], ids=["type-9", "type-8", "open", "ping"])
async def test_an_engine_io_packet_a_client_never_sends_closes_its_websocket_with_one_line(
    api: ApiClient, caplog: pytest.LogCaptureFixture, packet: bytes
) -> None:
    alice, bob = await api.user(), await api.user()
    fine = await open_tab(api, bob)
    try:
        caplog.clear()
        client: LightClient = await connect("127.0.0.1", _port(api), alice.token)
        assert client.transport is not None
        for _ in range(20):  # a flood of them: still one line, and only until the first closes the session
            client.transport.write(_client_frame(packet))
        await asyncio.wait_for(client.closed, WAIT_S)
        assert _trouble(caplog) == [], [r.getMessage() for r in _trouble(caplog)]
        assert len([r for r in caplog.records if r.name.startswith(("realtime", "engineio", "socketio"))]) <= 1
        await fine.ok("room:leave", {"room_id": await make_room(api, bob)})  # the others carry on
    finally:
        await fine.close()


@pytest.mark.parametrize(
    "body",
    [b"9", b"3\x1e9", b"\xff\xfe", "\x1e".join(["3"] * 17).encode(), b"x"],
    ids=["type-9", "after-a-pong", "not-utf8", "17-packets", "not-a-number"],
)
async def test_long_polling_garbage_ends_the_session_with_400_and_one_line(
    api: ApiClient, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    alice = await api.user()
    sid = await _logged_in_polling_session(api, alice.token)
    caplog.clear()
    assert await _post(api, sid, body) == 400
    assert _trouble(caplog) == [], [r.getMessage() for r in _trouble(caplog)]
    assert len([r for r in caplog.records if r.name.startswith(("realtime", "engineio", "socketio"))]) <= 1
    status, _ = await _poll(api, sid)
    assert status == 400  # the session is gone


PLACEHOLDER = '451-["no:such",{"_placeholder":true,"num":0}]'


async def test_a_binary_placeholder_without_its_attachment_closes_the_websocket(
    api: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    """python-socketio took every later message for the awaited attachment: the connection swallowed events."""
    alice = await api.user()
    client: LightClient = await connect("127.0.0.1", _port(api), alice.token)
    assert client.transport is not None
    caplog.clear()
    client.transport.write(_client_frame(PLACEHOLDER.encode()))
    client.emit("no:such", {})  # text where the attachment should be
    await asyncio.wait_for(client.closed, WAIT_S)
    assert _trouble(caplog) == []
    assert any("binary attachment" in r.getMessage() for r in caplog.records)


async def test_a_binary_placeholder_without_its_attachment_closes_the_polling_session(api: ApiClient) -> None:
    alice = await api.user()
    sid = await _logged_in_polling_session(api, alice.token)
    assert await _post(api, sid, PLACEHOLDER.encode()) == 200
    assert await _post(api, sid, b'4299["no:such",{}]') == 200
    status, text = await _poll(api, sid)
    assert status == 400 or text.startswith("1"), text  # gone (or Engine.IO's CLOSE), not a swallowed event
    assert (await _poll(api, sid))[0] == 400


async def test_a_packet_announcing_too_many_attachments_closes_the_connection(api: ApiClient) -> None:
    alice = await api.user()
    client: LightClient = await connect("127.0.0.1", _port(api), alice.token)
    assert client.transport is not None
    client.transport.write(_client_frame(b'45999999-["no:such",{"_placeholder":true,"num":0}]'))
    await asyncio.wait_for(client.closed, WAIT_S)


async def test_binary_payloads_from_the_official_client_are_still_answered(api: ApiClient) -> None:
    alice = await api.user()
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(server_url(api), auth={"token": alice.token}, transports=["websocket"], wait_timeout=5)
    try:
        ack = await client.call("room:join", {"room_id": b"\x00\x01"}, timeout=WAIT_S)
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_input"
        assert (await client.call("no:such", {}, timeout=WAIT_S))["ok"] is False  # and the next event too
    finally:
        await client.disconnect()


def test_the_servers_packets_still_carry_bytes_as_binary_attachments() -> None:
    """The server's faster binary check (:class:`realtime.engine.FastPacket`) finds bytes wherever python-socketio's
    own finds them, so data with bytes still goes out as a binary packet and data without as plain JSON."""
    values: list[Any] = [
        None,
        1,
        "x",
        [],
        {},
        [1, [2, {"a": b"x"}]],
        {"a": {"b": [bytearray(b"")]}},
        {"a": (b"in a tuple, which neither looks into",)},
        [{"a": []}, True, 1.5, {"k": None}],
        {"rooms": [{"members": [{"id": str(i), "display_name": f"U {i}"} for i in range(50)]}]},
        {"rooms": [{"members": [{"id": str(i), "avatar": b"\x89PNG" if i == 49 else None} for i in range(50)]}]},
    ]
    for value in values:
        assert FastPacket.data_is_binary(value) == socketio.packet.Packet.data_is_binary(value), value
    ack = FastPacket(socketio.packet.ACK, data=[{"file": [b"\x00\x01"]}], id=7)
    assert ack.packet_type == socketio.packet.BINARY_ACK
    assert ack.encode() == ['61-7[{"file":[{"_placeholder":true,"num":0}]}]', b"\x00\x01"]
    plain = FastPacket(socketio.packet.ACK, data=[{"ok": True}], id=7)
    assert plain.packet_type == socketio.packet.ACK and plain.encode() == '37[{"ok":true}]'


# --- 17: sessions that never log in ----------------------------------------------------------------------


async def _metric(api: ApiClient, name: str) -> float:
    resp = await api.http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status == 200
    match = re.search(rf"^{re.escape(name)} (\S+)$", await resp.text(), re.M)
    assert match, name
    return float(match.group(1))


async def test_anonymous_sessions_are_capped_per_address_and_expire(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        sio_anonymous_per_address=5,
        sio_anonymous_max=50,
        sio_connect_timeout_s=1.0,
        metrics_token=METRICS_TOKEN,
    )
    api = ApiClient(await aiohttp_client(create_app(settings)))
    user = await api.user()
    member = socketio.AsyncClient(reconnection=False)  # a user who logs in: never counted, never expired
    await member.connect(server_url(api), auth={"token": user.token}, transports=["polling"], wait_timeout=5)
    try:
        sids = []
        for _ in range(5):
            status, sid, _ = await _open_polling(api)
            assert status == 200
            sids.append(sid)
        status, error, headers = await _open_polling(api)
        assert status == 429
        assert error["error"]["code"] == "rate_limited"
        assert int(headers["Retry-After"]) >= 1
        assert await _metric(api, "studyhall_engineio_sessions_anonymous") == 5
        assert await _metric(api, "studyhall_engineio_sessions") == 6  # with the member's

        # Each waiting poll is answered when its session expires: Engine.IO's CLOSE (or, had the poll come
        # after the expiry, 400: no such session).
        answers = await asyncio.wait_for(asyncio.gather(*(_poll(api, sid) for sid in sids)), WAIT_S)
        assert all(text.startswith("1") if status == 200 else status == 400 for status, text in answers), answers
        assert [(await _poll(api, sid))[0] for sid in sids] == [400] * 5  # gone, not just quiet
        assert await _metric(api, "studyhall_engineio_sessions_anonymous") == 0
        assert await _metric(api, "studyhall_engineio_sessions") == 1
        assert await _metric(api, "studyhall_engineio_sessions_expired_total") == 5
        assert await _metric(api, 'studyhall_engineio_sessions_refused_total{limit="per_address"}') == 1

        status, _, _ = await _open_polling(api)  # room again for this address
        assert status == 200
        assert (await member.call("no:such", {}, timeout=WAIT_S))["ok"] is False  # the member is still there
    finally:
        await member.disconnect()


async def test_the_node_wide_cap_answers_503_and_client_addresses_follow_rest(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url, tmp_path, sio_anonymous_per_address=2, sio_anonymous_max=4, trust_forwarded_for=True
    )
    api = ApiClient(await aiohttp_client(create_app(settings)))
    for i in range(4):  # four addresses (behind the trusted proxy), one session each
        status, _, _ = await _open_polling(api, {"X-Forwarded-For": f"203.0.113.{i}"})
        assert status == 200
    status, error, headers = await _open_polling(api, {"X-Forwarded-For": "203.0.113.99"})
    assert status == 503
    assert error["error"]["code"] == "unavailable"
    assert "Retry-After" in headers


async def test_a_websocket_without_a_login_is_refused_past_the_cap_and_closed_when_it_expires(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, sio_anonymous_per_address=1, sio_connect_timeout_s=1.0)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    idle = await api.http.ws_connect("/socket.io/?EIO=4&transport=websocket")
    assert (await idle.receive(timeout=WAIT_S)).data.startswith("0")  # Engine.IO open, then nothing
    resp = await api.http.get("/socket.io/?EIO=4&transport=websocket", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    })  # fmt: skip
    assert resp.status == 429
    texts = []
    while True:  # the expiry: Engine.IO's CLOSE, then the websocket closes
        msg = await idle.receive(timeout=WAIT_S)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
        texts.append(msg.data)
    assert texts == ["1"]
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
