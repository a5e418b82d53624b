"""Boards: ranks and top-N of standings computed from Postgres (the truth), kept for fast reads.

Two implementations of :class:`Board`, chosen once at start-up by :func:`open_board`, answering alike:

- :class:`LocalBoard`: one process, a dictionary and a sorted list per key.
- :class:`RedisBoard`: one sorted set per key, shared by every node; a key is replaced as a whole
  (written under a temporary name, then renamed), so a reader never sees half a board, or changed
  member by member (``update``: one ``ZADD`` and one ``ZREM`` in a transaction).

A member's value is :func:`leaderboards.core.board_score` (score first, then penalty). Equal values
share a rank: a member's rank is one more than the number of members with a strictly greater value.
Among equal values, top-N lists members in descending id order (Redis' ``ZREVRANGE`` order).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from sortedcontainers import SortedList

from core_api.settings import Settings


@dataclass(frozen=True)
class Entry:
    member: str
    value: float
    rank: int


class Board(Protocol):
    async def replace(self, key: str, values: dict[str, float]) -> None: ...

    async def update(self, key: str, values: dict[str, float], removed: list[str]) -> bool:
        """Set some members' values and remove others; ``False`` (nothing done) if the key does not exist."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def rank(self, key: str, member: str) -> Entry | None: ...

    async def top(self, key: str, n: int) -> list[Entry]: ...

    async def close(self) -> None: ...


def _ranked(ordered: list[tuple[str, float]], above_first: int) -> list[Entry]:
    out: list[Entry] = []
    for i, (member, value) in enumerate(ordered):
        same = i > 0 and ordered[i - 1][1] == value
        out.append(Entry(member, value, out[-1].rank if same else above_first + i + 1))
    return out


class LocalBoard:
    """An in-process board (embedded mode)."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, float]] = {}
        self._sorted: dict[str, SortedList[tuple[float, str]]] = {}  # ascending (value, member)
        self._ascending: dict[str, SortedList[float]] = {}  # for ranks by bisection

    async def replace(self, key: str, values: dict[str, float]) -> None:
        self._values[key] = dict(values)
        self._sorted[key] = SortedList((v, m) for m, v in values.items())
        self._ascending[key] = SortedList(values.values())

    async def update(self, key: str, values: dict[str, float], removed: list[str]) -> bool:
        if key not in self._values:
            return False
        mine, ordered, ascending = self._values[key], self._sorted[key], self._ascending[key]
        for member in [*values, *removed]:
            old = mine.pop(member, None)
            if old is not None:
                ordered.remove((old, member))
                ascending.remove(old)
        for member, value in values.items():
            mine[member] = value
            ordered.add((value, member))
            ascending.add(value)
        return True

    async def exists(self, key: str) -> bool:
        return key in self._values

    async def rank(self, key: str, member: str) -> Entry | None:
        value = self._values.get(key, {}).get(member)
        if value is None:
            return None
        ascending = self._ascending[key]
        above = len(ascending) - ascending.bisect_right(value)
        return Entry(member, value, above + 1)

    async def top(self, key: str, n: int) -> list[Entry]:
        ordered = self._sorted.get(key)
        if not ordered or n <= 0:
            return []
        return _ranked([(m, v) for v, m in reversed(ordered[-n:])], 0)

    async def close(self) -> None:
        self._values.clear()
        self._sorted.clear()
        self._ascending.clear()


class RedisBoard:
    """Sorted sets in Redis (scaled mode), under ``studyhall:board:<key>``."""

    def __init__(self, url: str) -> None:
        self.redis: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=True)

    @staticmethod
    def _key(key: str) -> str:
        return f"studyhall:board:{key}"

    async def replace(self, key: str, values: dict[str, float]) -> None:
        target = self._key(key)
        if not values:
            await self.redis.delete(target)
            await self.redis.set(target + ":empty", "1")
            return
        temp = f"{target}:tmp:{uuid.uuid4().hex}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(temp, values)
            pipe.rename(temp, target)
            pipe.delete(target + ":empty")
            await pipe.execute()

    async def update(self, key: str, values: dict[str, float], removed: list[str]) -> bool:
        target = self._key(key)
        if not await self.exists(key):
            return False
        if not values and not removed:
            return True
        async with self.redis.pipeline(transaction=True) as pipe:
            if values:
                pipe.zadd(target, values)
                pipe.delete(target + ":empty")
            if removed:
                pipe.zrem(target, *removed)
            await pipe.execute()
        return True

    async def exists(self, key: str) -> bool:
        target = self._key(key)
        return bool(await self.redis.exists(target, target + ":empty"))

    async def rank(self, key: str, member: str) -> Entry | None:
        target = self._key(key)
        value = await self.redis.zscore(target, member)
        if value is None:
            return None
        above = await self.redis.zcount(target, f"({value}", "+inf")
        return Entry(member, float(value), int(above) + 1)

    async def top(self, key: str, n: int) -> list[Entry]:
        rows = await self.redis.zrevrange(self._key(key), 0, n - 1, withscores=True)
        return _ranked([(str(m), float(v)) for m, v in rows], 0)

    async def close(self) -> None:
        await self.redis.aclose()


def open_board(settings: Settings) -> Board:
    """The board of this deployment: Redis when configured, else in-process."""
    if settings.redis_url is not None:
        return RedisBoard(settings.redis_url.get_secret_value())
    return LocalBoard()
