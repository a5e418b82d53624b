"""The contests service for as long as the app runs (a ``cleanup_ctx`` registered in ``realtime/app.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from core_api.context import CORE
from core_api.executions import EXECUTIONS
from core_api.settings import Settings
from leaderboards.board import open_board
from leaderboards.cycle import CYCLE, Cycle
from leaderboards.handlers import CONTESTS, SESSION_KEY
from leaderboards.live import Gate, RedisGate
from leaderboards.service import Contests, utcnow
from realtime.sockets import SOCKETS


async def run_contests(
    settings: Settings, app: web.Application, *, observe_push: Callable[[float], None] | None = None
) -> AsyncIterator[None]:
    """``observe_push``: given what the server added to each push (``studyhall_leaderboard_push_added_seconds``)."""
    board = open_board(settings)
    gate: Gate | None = RedisGate(settings.redis_url.get_secret_value()) if settings.redis_url else None
    sockets = app[SOCKETS]
    service = Contests(
        app[CORE], app.get(EXECUTIONS), board, sockets, gate=gate, interval_s=settings.contest_push_interval_s
    )
    service.live.observe = observe_push
    app[CONTESTS] = service
    sockets.services[SESSION_KEY] = service
    cycle = Cycle(service)
    app[CYCLE] = cycle
    # Every node runs the cycle: each step is once-only in Postgres, so nodes never do anything twice.
    scheduler = asyncio.create_task(cycle.run(settings.contest_cycle_s, utcnow)) if settings.contest_cycle_s else None
    try:
        yield
    finally:
        if scheduler is not None:
            scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scheduler
        await service.close()
        await board.close()
