"""Input typed into a running program, as in a console: the feed a run's standard input is filled from.

A run asked for as ``interactive`` gets a pipe as its standard input instead of a file: first the
request's ``stdin``, then whatever is fed to its :class:`InputFeed` while it runs, in order, until
someone closes the input (EOF) or the program ends. The feed lives where the job runs (this process's
pool, or a Celery worker, which relays input sent over Redis into it: :mod:`sandbox.distributed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import AsyncIterator
from enum import StrEnum


class InputRefusal(StrEnum):
    FINISHED = "finished"  # the program has ended (or was never an interactive run here)
    CLOSED = "closed"  # its input was closed (EOF) already
    TOO_LARGE = "too_large"  # the run's input would pass its total limit


class InputRefused(Exception):
    """Input that cannot go to the run; ``reason`` says why (the message is for people)."""

    def __init__(self, reason: InputRefusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InputFeed:
    """A run's typed input: chunks in the order fed, then perhaps EOF.

    Args:
        initial: what the program reads first (the request's ``stdin``).
        max_total: bytes that may be fed in all (``initial`` not counted); None: no limit here (a Celery
            worker's feed, whose senders the nodes limit).
    """

    def __init__(self, initial: bytes = b"", max_total: int | None = None) -> None:
        self._chunks: deque[bytes] = deque([initial] if initial else [])
        self._eof = False
        self._ended = False
        self._wake = asyncio.Event()
        self.max_total = max_total
        self.total = 0

    @property
    def ended(self) -> bool:
        return self._ended

    def feed(self, data: bytes, eof: bool = False) -> None:
        """Queue ``data`` for the program (and close its input after it with ``eof``), or raise
        :class:`InputRefused`."""
        if self._ended:
            raise InputRefused(InputRefusal.FINISHED, "the run has finished")
        if self._eof:
            raise InputRefused(InputRefusal.CLOSED, "the run's input is closed (EOF was sent)")
        if self.max_total is not None and self.total + len(data) > self.max_total:
            raise InputRefused(
                InputRefusal.TOO_LARGE, f"a run takes at most {self.max_total} bytes of typed input in all"
            )
        self.total += len(data)
        if data:
            self._chunks.append(data)
        self._eof = eof
        self._wake.set()

    def end(self) -> None:
        """The program has ended: nothing more is taken."""
        self._ended = True
        self._wake.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        """What to write to the program's input, as it comes; ends at EOF or when the program ends."""
        while not self._ended:
            while self._chunks:
                yield self._chunks.popleft()
            if self._eof:
                return
            self._wake.clear()
            if not self._chunks and not self._eof and not self._ended:
                await self._wake.wait()


async def pump(feed: InputFeed, fd: int) -> None:
    """Write the feed into the pipe ``fd`` (the write end of the program's stdin), then close it: at EOF,
    when the program ends, or when it closes its own end. Never blocks the event loop on a full pipe."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    try:
        async for chunk in feed.chunks():
            view = memoryview(chunk)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BlockingIOError:
                    await _writable(loop, fd)
    except OSError:
        pass  # the program closed its input or ended (EPIPE): nothing more can reach it
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
