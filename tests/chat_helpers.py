"""Helpers of the chat tests: rooms made in SQL, real Socket.IO clients with a queue per server event.

Clients enter rooms with the real ``room:join``; room roles other than the creator's host are set in
SQL first (``room:join`` keeps an existing membership).

"Nothing arrived" is proven without sleeping: :meth:`Tab.flush` makes a round trip on the client's own
connection. The server sends a room event to every recipient before it acks the event that caused it,
and one connection delivers in order, so once the flush is answered anything sent earlier has arrived.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import socketio

from core_api.context import CORE
from tests.conftest import Actor, ApiClient

SERVER_EVENTS = (
    "chat:message",
    "chat:updated",
    "chat:reactions",
    "chat:typing",
    "chat:moderation",
    "room:kicked",
    "room:presence",
    "room:renamed",
    "me:changed",
    "notification:new",
    "chat:read",
    "dm:message",
)
WAIT_S = 10


def server_url(api: ApiClient) -> str:
    return str(api.http.make_url("/")).rstrip("/")


class Tab:
    """One real ``socketio.AsyncClient`` connection of a user."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor
        self.sio = socketio.AsyncClient(reconnection=False)
        self.inbox: dict[str, asyncio.Queue[Any]] = {name: asyncio.Queue() for name in SERVER_EVENTS}
        for name in SERVER_EVENTS:
            self.sio.on(name, self.inbox[name].put)

    async def open(self, url: str) -> Tab:
        await self.sio.connect(url, auth={"token": self.actor.token}, transports=["websocket"], wait_timeout=5)
        return self

    async def call(self, event: str, data: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.sio.call(event, data, timeout=WAIT_S)
        return ack

    async def ok(self, event: str, data: Any) -> dict[str, Any]:
        ack = await self.call(event, data)
        assert ack["ok"] is True, f"{event} {data!r} → {ack!r}"
        return ack

    async def fails(self, event: str, data: Any, code: str) -> str:
        ack = await self.call(event, data)
        assert ack["ok"] is False, f"{event} {data!r} unexpectedly succeeded: {ack!r}"
        assert ack["error"]["code"] == code, f"{event} {data!r} → {ack!r}, expected {code}"
        message: str = ack["error"]["message"]
        return message

    async def next(self, event: str) -> Any:
        return await asyncio.wait_for(self.inbox[event].get(), timeout=WAIT_S)

    async def flush(self) -> None:
        """A round trip on this connection: afterwards every event sent to it earlier has arrived."""
        await self.call("test:flush", {})

    async def nothing_pending(self, event: str) -> bool:
        await self.flush()
        return self.inbox[event].empty()

    def drain(self, event: str) -> list[Any]:
        items = []
        while not self.inbox[event].empty():
            items.append(self.inbox[event].get_nowait())
        return items

    async def send(self, room_id: str, body: str, client_msg_id: str | None = None) -> dict[str, Any]:
        ack = await self.ok(
            "chat:send", {"room_id": room_id, "body": body, "client_msg_id": client_msg_id or uuid.uuid4().hex}
        )
        message: dict[str, Any] = ack["message"]
        return message

    async def join(self, room_id: str) -> dict[str, Any]:
        return await self.ok("room:join", {"room_id": room_id})

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


async def open_tab(api: ApiClient, actor: Actor) -> Tab:
    return await Tab(actor).open(server_url(api))


async def make_room(api: ApiClient, host: Actor, *members: Actor, visibility: str = "private") -> str:
    """A room made in SQL, ``host`` its host and ``members`` invited (the rooms REST API is tested elsewhere).

    Private by default, so the rooms of these tests stay out of other tests' room lists.
    """
    room_id = uuid.uuid4()
    async with api.app[CORE].pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO rooms (id, name, kind, visibility, created_by) VALUES ($1, $2, 'study', $3, $4)",
            room_id,
            f"chat {room_id.hex[:6]}",
            visibility,
            uuid.UUID(host.id),
        )
        await conn.executemany(
            "INSERT INTO room_members (room_id, user_id, role, invited_by) VALUES ($1, $2, $3, $4)",
            [(room_id, uuid.UUID(host.id), "host", None)]
            + [(room_id, uuid.UUID(m.id), "member", uuid.UUID(host.id)) for m in members],
        )
    return str(room_id)


async def set_room_role(api: ApiClient, room_id: str, actor: Actor, role: str) -> None:
    await api.app[CORE].pool.execute(
        "INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, $3)"
        " ON CONFLICT (room_id, user_id) DO UPDATE SET role = $3",
        uuid.UUID(room_id),
        uuid.UUID(actor.id),
        role,
    )


async def age_messages(api: ApiClient, actor: Actor, seconds: float) -> None:
    """Move a user's messages back in time: what a clock passing ``seconds`` looks like to the rate rules."""
    await api.app[CORE].pool.execute(
        "UPDATE chat_messages SET created_at = created_at - make_interval(secs => $2) WHERE author_id = $1",
        uuid.UUID(actor.id),
        seconds,
    )


async def fetchval(api: ApiClient, sql: str, *args: Any) -> Any:
    return await api.app[CORE].pool.fetchval(sql, *args)


async def fetch(api: ApiClient, sql: str, *args: Any) -> list[Any]:
    return list(await api.app[CORE].pool.fetch(sql, *args))


OpenTab = Callable[[Actor], Awaitable[Tab]]


@pytest.fixture
async def tabs(api: ApiClient) -> AsyncIterator[OpenTab]:
    """Opens connected tabs for actors and closes them all after the test."""
    opened: list[Tab] = []

    async def make(actor: Actor) -> Tab:
        tab = await open_tab(api, actor)
        opened.append(tab)
        return tab

    yield make
    for tab in opened:
        await tab.close()
