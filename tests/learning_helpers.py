"""Watching lectures the way a player does: position reports that really take time (tests of progress,
certificates and everything built on them)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import Actor, ApiClient

TEST_MAX_RATE = 1000.0
"""``STUDYHALL_PROGRESS_MAX_RATE`` of the test apps (tests/conftest.py): they count lectures played up to
1000 times faster than real time as watched, so a test need not sit through them."""
WATCH_SPEED = TEST_MAX_RATE / 2
"""How fast :func:`watch` plays: well within the limit, whatever the server's delays."""
STEP_S = 0.02


async def report(api: ApiClient, actor: Actor, lecture: dict[str, Any], position_s: float) -> Any:
    status, out = await api.call("PUT", f"/lectures/{lecture['id']}/progress", actor, json={"position_s": position_s})
    assert status == 200, out
    return out


async def watch(
    api: ApiClient,
    actor: Actor,
    lecture: dict[str, Any],
    *,
    start: float = 0.0,
    until: float | None = None,
    speed: float = WATCH_SPEED,
) -> Any:
    """Play ``lecture`` from ``start`` to ``until`` (default: its end) at ``speed`` times real time, reporting
    the position every :data:`STEP_S` of real time; the last answer.

    Each step moves the position only by the time that passed between the previous answer and this
    report: the server measures between the two reports' arrivals, which is never less.
    """
    end = lecture["duration_s"] if until is None else until
    position = start
    out = await report(api, actor, lecture, position)
    answered = time.monotonic()
    while position < end:
        # The passing of real time is what is being measured here, not something to wait for.
        await asyncio.sleep(STEP_S)
        position = min(end, position + speed * (time.monotonic() - answered))
        out = await report(api, actor, lecture, position)
        answered = time.monotonic()
    return out
