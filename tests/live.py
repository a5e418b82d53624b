"""A real studyhall server on 127.0.0.1 in a background thread, for synchronous clients (schemathesis)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from core_api.settings import Settings
from realtime.app import create_app

T = TypeVar("T")


class LiveServer:
    """Runs ``create_app(settings)`` on its own event loop in a thread; ``url`` is its base URL."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.app: web.Application = create_app(settings)
        self.runner = web.AppRunner(self.app)
        self.url = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop (e.g. to call a service) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.run(self._cancel_leftovers())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    @staticmethod
    async def _cancel_leftovers() -> None:
        """Cancel what is still running after the app's cleanup (Engine.IO's ping tasks of clients that never
        said goodbye, say), as ``web.run_app`` does, rather than have the closed loop destroy them pending."""
        here = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not here]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
