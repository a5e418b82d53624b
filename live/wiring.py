"""Live sessions for as long as the app runs (a ``cleanup_ctx`` registered in ``realtime/app.py``): the
schedule with its reminder loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from core_api.context import CORE
from core_api.settings import Settings
from live.handlers import SCHEDULE
from live.schedule import Schedule


async def run_live(settings: Settings, app: web.Application) -> AsyncIterator[None]:
    schedule = Schedule(app[CORE])
    app[SCHEDULE] = schedule
    # Every node runs the reminder loop: each session's reminder is claimed once in Postgres.
    interval = settings.live_reminder_cycle_s
    reminders = asyncio.create_task(schedule.run(interval)) if interval else None
    try:
        yield
    finally:
        if reminders is not None:
            reminders.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reminders
