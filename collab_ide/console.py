"""A workspace run's console: ``run:input`` sends what a user types to the running program's stdin.

A run started with ``interactive: true`` (``POST /workspaces/{id}/runs``) keeps its standard input open;
``run:input {workspace_id, run_id, data, eof}`` appends ``data`` to it (and closes it after, with
``eof``), wherever the program runs: this node's pool, or a Celery worker, to which the input goes over
Redis (:mod:`sandbox.distributed`). Who may: whoever may run the workspace's code (edit access), and only
into a run of that workspace. Each event is at most ``run_input_max_bytes``, a run takes at most
``run_input_total_bytes`` in all, and a connection sends at most ``run_input_per_s`` events a second
(bursts of as many). Input to a run that has finished, or whose input was closed, is refused with a
``conflict`` ack saying so.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from collab_ide.access import workspace_row
from core_api.errors import AppError, ErrorCode, forbidden, not_found
from core_api.events import EventCall, Events
from core_api.executions import SESSION_KEY, Executions
from core_api.http import Input

events = Events()
_BUCKET = "collab_ide.run_input_bucket"
"""Session key: the connection's :class:`InputBucket`."""
MAX_INPUT_CHARS = 65536  # the setting's upper bound; the setting decides (in bytes)


class RunInputIn(Input):
    """Payload of ``run:input``."""

    workspace_id: uuid.UUID
    run_id: uuid.UUID
    data: str = Field("", max_length=MAX_INPUT_CHARS, description="Text for the program's stdin (UTF-8).")
    eof: bool = Field(False, description="Close the program's stdin after `data` (as Ctrl-D in a terminal).")


@dataclass
class InputBucket:
    """A token bucket: ``rate`` events a second, bursts of ``rate`` (at least one; monotonic seconds)."""

    rate: float
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@events.on("run:input", RunInputIn)
async def run_input(call: EventCall) -> dict[str, Any] | None:
    executions: Executions = call.session[SESSION_KEY]
    settings = executions.settings
    body: RunInputIn = call.payload
    bucket = call.session.get(_BUCKET)
    if bucket is None:
        bucket = call.session[_BUCKET] = InputBucket(
            settings.run_input_per_s, max(1.0, settings.run_input_per_s), time.monotonic()
        )
    if not bucket.take(time.monotonic()):
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"at most {settings.run_input_per_s:g} run:input events a second",
            {"retry_after_s": 1},
        )
    data = body.data.encode()
    if len(data) > settings.run_input_max_bytes:
        raise AppError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"data: at most {settings.run_input_max_bytes} bytes per run:input event"
        )
    await send_input(executions, call, body.workspace_id, body.run_id, data, body.eof)
    return None


async def send_input(
    executions: Executions, call: EventCall, workspace_id: uuid.UUID, run_id: uuid.UUID, data: bytes, eof: bool
) -> None:
    _, access = await workspace_row(call.core.pool, call.user, workspace_id)
    if not access.edit:
        raise forbidden("typing into a workspace's run needs edit access to it")
    execution_id = await call.core.pool.fetchval(
        "SELECT execution_id FROM workspace_runs WHERE workspace_id = $1 AND id = $2", workspace_id, run_id
    )
    if execution_id is None:
        raise not_found("run")
    await executions.send_input(execution_id, data, eof)
