"""Search use cases: the abuse limits, who may search what, and the answer grouped by kind."""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web

from core_api.auth import LocalLimiter, LoginLimiter, RedisLimiter
from core_api.context import CORE, Core
from core_api.errors import AppError, ErrorCode, invalid
from core_api.http import Principal
from core_api.search import core, store
from core_api.search.schemas import (
    CourseGroup,
    CourseHit,
    Kind,
    LectureGroup,
    LectureHit,
    MessageGroup,
    MessageHit,
    PostGroup,
    PostHit,
    SearchOut,
    SearchQuery,
    UserGroup,
    UserHit,
)
from core_api.settings import Settings

_HITS: dict[Kind, tuple[type[Any], type[Any]]] = {
    "courses": (CourseGroup, CourseHit),
    "lectures": (LectureGroup, LectureHit),
    "messages": (MessageGroup, MessageHit),
    "posts": (PostGroup, PostHit),
    "users": (UserGroup, UserHit),
}


def open_limiter(settings: Settings) -> tuple[LoginLimiter, Any]:
    """The per-user search rate limit: in Redis when scaled (every node counts alike), else in this process.
    Answers the limiter and the Redis client to close (or None)."""
    limit, window = settings.search_rate_count, settings.search_rate_window_s
    if settings.redis_url is None:
        return LocalLimiter(limit, window), None
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
    database = settings.database_url.get_secret_value() if settings.database_url else str(settings.data_dir)
    deployment = hashlib.sha256(database.encode()).hexdigest()[:12]
    return RedisLimiter(client, f"studyhall:search:{deployment}:", limit, window), client


class Search:
    """Searching for one app. ``limiter`` counts searches per user (``STUDYHALL_SEARCH_RATE_*``)."""

    def __init__(self, core: Core, limiter: LoginLimiter) -> None:
        self.core = core
        self.settings = core.settings
        self.limiter = limiter
        self.limits = core_limits(core.settings)

    async def search(self, user: Principal, query: SearchQuery) -> SearchOut:
        words = core.words_of(query.q, self.limits)
        kinds = core.kinds_of(query.kinds, admin=user.is_admin)
        position = core.decode_cursor(query.cursor, kinds)
        if query.limit > self.limits.max_limit:
            raise invalid(f"limit is at most {self.limits.max_limit}", max_limit=self.limits.max_limit)
        wait = await self.limiter.take(str(user.id))
        if wait > 0:
            raise AppError(ErrorCode.RATE_LIMITED, "too many searches; slow down", {"retry_after_s": math.ceil(wait)})
        groups: dict[str, Any] = {}
        try:
            # One snapshot for the memberships and the messages read under them.
            async with self.core.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                # A pathological query stops here instead of holding a connection (SET LOCAL: this transaction);
                # each search is planned for its own words (store.py says why).
                timeout = int(self.settings.search_timeout_ms)
                await conn.execute(
                    f"SET LOCAL statement_timeout = {timeout}; SET LOCAL plan_cache_mode = force_custom_plan"
                )
                rooms, visible = await store.member_rooms(conn, user.id) if "messages" in kinds else ([], 0)
                estimated = None
                if "messages" in kinds and visible > core.BY_ROOM_ALWAYS:
                    estimated = await store.estimated_matches(conn, words, self.settings.search_min_prefix_chars)
                by_room = core.read_messages_by_room(visible, estimated)
                for kind in kinds:
                    after = (position.rank, position.id) if position is not None else None
                    rows = await store.search(
                        conn,
                        kind,
                        words,
                        self.settings.search_min_prefix_chars,
                        user.id,
                        user.is_admin,
                        query.limit + 1,
                        after,
                        rooms,
                        by_room=by_room,
                    )
                    groups[kind] = _group(kind, rows, query.limit)
        except asyncpg.QueryCanceledError:
            raise AppError(
                ErrorCode.UNAVAILABLE, "the search took too long; try more or longer words", {"retry_after_s": 1}
            ) from None
        return SearchOut(words=words, **groups)


def core_limits(settings: Settings) -> core.Limits:
    return core.Limits(
        max_query_chars=settings.search_max_query_chars,
        max_words=settings.search_max_words,
        max_limit=settings.search_max_limit,
    )


_SNIPPETS = ("snippet", "title_snippet")


def _with_segments(row: dict[str, Any]) -> dict[str, Any]:
    return {k: core.segments(v) if k in _SNIPPETS else v for k, v in row.items()}


def _group(kind: Kind, rows: list[Any], limit: int) -> Any:
    group, hit = _HITS[kind]
    more = len(rows) > limit
    rows = rows[:limit]
    items = [hit(**_with_segments(dict(r))) for r in rows]
    cursor = core.encode_cursor(kind, float(rows[-1]["rank"]), rows[-1]["id"]) if more and rows else None
    return group(items=items, next_cursor=cursor)


SEARCH = web.AppKey("search", Search)


async def run_search(app: web.Application) -> AsyncIterator[None]:
    """The app's :class:`Search` (a ``cleanup_ctx`` after the database's)."""
    limiter, client = open_limiter(app[CORE].settings)
    app[SEARCH] = Search(app[CORE], limiter)
    try:
        yield
    finally:
        if client is not None:
            await client.aclose()
