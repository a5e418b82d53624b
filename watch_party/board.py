"""The sync board: every viewer connection's latest heartbeat, per room, for the host's sync report.

Heartbeats come often (about once a second per viewer) and matter only while fresh, so they never go to
Postgres. Two implementations of :class:`SyncBoard`, chosen once at start-up by :func:`open_board`:

- :class:`LocalBoard`: one process, a dictionary.
- :class:`RedisBoard`: shared by every node: one hash per room (field: ``<node>:<sid>``, value: the
  beat as JSON), whose key expires when the room falls silent. Beats older than the viewer TTL are left
  out of reads and pruned, so a dead node's viewers fade from the report on their own.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable
from dataclasses import asdict
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis

from core_api.settings import Settings
from watch_party.core import Person
from watch_party.drift import Beat

T = TypeVar("T")


async def _done(result: Awaitable[T] | T) -> T:
    if inspect.isawaitable(result):
        return await result
    return result


def beat_to_json(beat: Beat) -> str:
    return json.dumps(asdict(beat))


def beat_from_json(raw: str | bytes) -> Beat:
    doc: dict[str, Any] = json.loads(raw)
    user = doc["user"]
    return Beat(**{**doc, "user": Person(user["id"], user["display_name"])})


class SyncBoard(Protocol):
    async def put(self, room_id: str, beat: Beat) -> None: ...

    async def remove(self, room_id: str, key: str) -> None: ...

    async def beats(self, room_id: str, newer_than: float) -> list[Beat]:
        """The room's beats received after ``newer_than`` (server time), older ones dropped."""
        ...

    async def close(self) -> None: ...


class LocalBoard:
    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, Beat]] = {}

    async def put(self, room_id: str, beat: Beat) -> None:
        self._rooms.setdefault(room_id, {})[beat.key] = beat

    async def remove(self, room_id: str, key: str) -> None:
        room = self._rooms.get(room_id)
        if room is not None:
            room.pop(key, None)
            if not room:
                del self._rooms[room_id]

    async def beats(self, room_id: str, newer_than: float) -> list[Beat]:
        room = self._rooms.get(room_id, {})
        for key in [k for k, b in room.items() if b.received_at <= newer_than]:
            del room[key]
        return list(room.values())

    async def close(self) -> None:
        self._rooms.clear()


class RedisBoard:
    """Args: client (``decode_responses=True``), ttl_s (how long a silent room's hash lives), prefix."""

    def __init__(self, client: aioredis.Redis, *, ttl_s: float, prefix: str = "studyhall:watch") -> None:
        self.redis = client
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, ttl_s: float) -> RedisBoard:
        return cls(aioredis.Redis.from_url(url, decode_responses=True), ttl_s=ttl_s)

    def _key(self, room_id: str) -> str:
        return f"{self.prefix}:{{{room_id}}}:beats"

    async def put(self, room_id: str, beat: Beat) -> None:
        key = self._key(room_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, beat.key, beat_to_json(beat))
            pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()

    async def remove(self, room_id: str, key: str) -> None:
        await _done(self.redis.hdel(self._key(room_id), key))

    async def beats(self, room_id: str, newer_than: float) -> list[Beat]:
        raw: dict[str, str] = await _done(self.redis.hgetall(self._key(room_id)))
        fresh: list[tuple[str, Beat]] = []
        stale: list[tuple[str, Beat]] = []
        for field, value in raw.items():
            beat = beat_from_json(value)
            (fresh if beat.received_at > newer_than else stale).append((field, beat))
        if stale:
            await _done(self.redis.hdel(self._key(room_id), *[f for f, _ in stale]))
        return [b for _, b in fresh]

    async def close(self) -> None:
        await self.redis.aclose()


def open_board(settings: Settings) -> SyncBoard:
    if settings.redis_url is None:
        return LocalBoard()
    return RedisBoard.from_url(settings.redis_url.get_secret_value(), ttl_s=settings.watch_viewer_ttl_s)
