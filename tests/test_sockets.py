"""The Socket.IO handshake, error acks for unknown events, and live notifications, with a real client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio

from tests.conftest import ApiClient


def server_url(api: ApiClient) -> str:
    return str(api.http.make_url("/")).rstrip("/")


async def connect(api: ApiClient, token: str | None) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(
        server_url(api), auth={"token": token} if token else None, transports=["websocket"], wait_timeout=5
    )
    return client


@pytest.mark.parametrize("token", [None, "", "garbage", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.x"])
async def test_bad_tokens_are_refused_with_unauthorized(api: ApiClient, token: str | None) -> None:
    client = socketio.AsyncClient(reconnection=False)
    errors: asyncio.Queue[Any] = asyncio.Queue()
    client.on("connect_error", errors.put)
    auth = {"token": token} if token is not None else None
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server_url(api), auth=auth, transports=["websocket"], wait_timeout=5)
    data = await asyncio.wait_for(errors.get(), timeout=5)
    assert data["data"] == {"code": "unauthorized"}
    assert data["message"]


async def test_unknown_events_and_bad_payloads_get_error_acks(api: ApiClient) -> None:
    user = await api.user()
    client = await connect(api, user.token)
    try:
        ack = await client.call("no:such", {"x": 1}, timeout=5)
        assert ack["ok"] is False
        assert ack["error"]["code"] == "invalid_input"
        assert client.connected
    finally:
        await client.disconnect()


async def test_notifications_arrive_live_in_the_personal_room(api: ApiClient) -> None:
    admin, user = await api.user("admin"), await api.user()
    client = await connect(api, user.token)
    got: asyncio.Queue[Any] = asyncio.Queue()
    client.on("notification:new", got.put)
    try:
        status, _ = await api.call("PUT", f"/users/{user.id}/role", admin, json={"role": "instructor"})
        assert status == 200
        note = await asyncio.wait_for(got.get(), timeout=5)
        assert note["kind"] == "role_changed"
        assert note["payload"]["role"] == "instructor"
    finally:
        await client.disconnect()
