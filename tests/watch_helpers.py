"""Helpers of the watch party tests: watch rooms made over REST and viewers as real Socket.IO clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.chat_helpers import server_url
from tests.conftest import Actor, ApiClient
from tests.nodes import Client, User, connect

Open = Callable[..., Awaitable[Client]]
"""The ``viewers`` fixture: ``await viewers(actor, room_id?)`` opens a viewer, closed after the test."""

VIDEO = {"url": "https://example.com/lecture.mp4", "kind": "video", "duration": 600.0, "title": "Lecture"}


async def watch_room(
    api: ApiClient, host: Actor, *members: Actor, kind: str = "watch", course_id: str | None = None
) -> str:
    """A private room of ``kind`` hosted by ``host`` with ``members`` invited; its id."""
    body: dict[str, Any] = {"name": "watch together", "kind": kind, "visibility": "private"}
    if course_id is not None:
        body["course_id"] = course_id
    status, room = await api.call("POST", "/rooms", host, json=body)
    assert status == 201, room
    for m in members:
        status, added = await api.call("POST", f"/rooms/{room['id']}/invite", host, json={"user_id": m.id})
        assert status == 201, added
    room_id: str = room["id"]
    return room_id


def as_user(actor: Actor, name: str = "") -> User:
    return User(actor.id, actor.email, name or actor.email, actor.token)


async def viewer(api: ApiClient, actor: Actor, room_id: str | None = None) -> Client:
    """A connected client of ``actor``, in ``room_id`` if given (``room:join``)."""
    client = await connect(server_url(api), as_user(actor))
    if room_id is not None:
        ack = await client.ask("room:join", {"room_id": room_id})
        assert ack["ok"] is True, ack
    return client


async def ok(client: Client, event: str, data: dict[str, Any]) -> dict[str, Any]:
    ack: dict[str, Any] = await client.ask(event, data)
    assert ack["ok"] is True, f"{event} {data!r} → {ack!r}"
    return ack


async def fails(client: Client, event: str, data: dict[str, Any], code: str) -> str:
    ack: dict[str, Any] = await client.ask(event, data)
    assert ack["ok"] is False, f"{event} {data!r} unexpectedly succeeded: {ack!r}"
    assert ack["error"]["code"] == code, f"{event} {data!r} → {ack!r}, expected {code}"
    message: str = ack["error"]["message"]
    return message


def state_with(room_id: str, **want: Any) -> Any:
    """A check for ``Inbox.wait_for``: a ``watch:state`` of the room with these fields."""

    def check(data: Any) -> bool:
        return bool(data.get("room_id") == room_id and all(data.get(k) == v for k, v in want.items()))

    return check


async def eventually(condition: Callable[[], bool], within: float = 15, every: float = 0.05) -> None:
    """Wait until ``condition()`` holds: for what moves with time itself (a simulated player converging),
    where no event marks the moment."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - the condition changes with the passing of time, not on an event
            await asyncio.sleep(every)


@pytest.fixture
async def viewers(api: ApiClient) -> AsyncIterator[Open]:
    opened: list[Client] = []

    async def make(actor: Actor, room_id: str | None = None) -> Client:
        client = await viewer(api, actor, room_id)
        opened.append(client)
        return client

    yield make
    for client in opened:
        if client.connected:
            await client.disconnect()
