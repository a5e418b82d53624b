"""Where each room's chat stands in Postgres, for the transport's in-order delivery of ``chat:message``.

Every node delivers a room's messages in ``seq`` order (:mod:`realtime.ordered`); when one is missing it
reads it here, and it compares the rooms its connections follow with their committed positions here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from core_api.context import Core
from rooms import chat_store as store
from rooms.access import socket_room
from rooms.chat_service import views

_PREFIX = socket_room("")


def _room_id(room: str) -> uuid.UUID | None:
    if not room.startswith(_PREFIX):
        return None
    try:
        return uuid.UUID(room[len(_PREFIX) :])
    except ValueError:
        return None


class ChatPositions:
    """:class:`realtime.ordered.OrderSource` over the chat tables."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def positions(self, rooms: Sequence[str]) -> dict[str, int]:
        ids = {room_id: room for room in rooms if (room_id := _room_id(room)) is not None}
        if not ids:
            return {}
        async with self.core.pool.acquire() as conn:
            found = await store.positions(conn, list(ids))
        return {ids[room_id]: last for room_id, last in found.items()}

    async def between(self, room: str, first: int, last: int, limit: int) -> list[dict[str, Any]]:
        room_id = _room_id(room)
        if room_id is None:
            return []
        async with self.core.pool.acquire() as conn:
            rows, _ = await store.history(conn, room_id, last + 1, first - 1, limit)
            return await views(conn, rows)
