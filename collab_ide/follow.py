"""Following a workspace's runs: ``run:follow`` puts a connection in the workspace's run channel.

Every run of a workspace is told to its channel, the Socket.IO room ``workspace:<id>`` (on every node,
through python-socketio's Redis manager when scaled), besides where it always went: the workspace's chat
room, or, for a workspace outside any room, the personal room of whoever started it
(:mod:`collab_ide.runs`). So everyone who has the workspace open hears ``run:output`` and
``run:finished`` of a run anyone starts, as in Replit; a connection in both places hears each event once.

Who may: anyone who may see the workspace (read or edit access, :mod:`collab_ide.access`); anyone else is
answered ``not_found``, as REST answers them. A connection follows at most ``run_follow_max`` workspaces
at once and sends at most ``run_follow_per_s`` ``run:follow`` events a second (bursts of as many). When
the user's rights change (a workspace member removed, a room membership lost), each connection is taken
out of the channels it may no longer follow and told ``run:unfollowed {workspace_id, reason: "access"}``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from collab_ide.access import workspace_row
from collab_ide.console import InputBucket
from core_api.errors import AppError, ErrorCode
from core_api.events import Connection, EventCall, Events
from core_api.http import Input

events = Events()
UNFOLLOWED_EVENT = "run:unfollowed"
_FOLLOWED = "collab_ide.runs_followed"
"""Session key: the ids (str) of the workspaces whose runs the connection follows."""
_BUCKET = "collab_ide.run_follow_bucket"
"""Session key: the connection's :class:`~collab_ide.console.InputBucket` for ``run:follow``."""


def run_channel(workspace_id: uuid.UUID | str) -> str:
    """The Socket.IO room a workspace's runs are told to (besides its chat room or its runner)."""
    return f"workspace:{workspace_id}"


class WorkspaceRef(Input):
    """Payload of ``run:follow`` and ``run:unfollow``."""

    workspace_id: uuid.UUID


def followed(session: dict[str, Any]) -> set[str]:
    ids: set[str] = session.setdefault(_FOLLOWED, set())
    return ids


@events.on("run:follow", WorkspaceRef)
async def follow(call: EventCall) -> dict[str, Any]:
    settings = call.core.settings
    bucket = call.session.get(_BUCKET)
    if bucket is None:
        rate = settings.run_follow_per_s
        bucket = call.session[_BUCKET] = InputBucket(rate, max(1.0, rate), time.monotonic())
    if not bucket.take(time.monotonic()):
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"at most {settings.run_follow_per_s:g} run:follow events a second",
            {"retry_after_s": 1},
        )
    workspace_id: uuid.UUID = call.payload.workspace_id
    ids = followed(call.session)
    key = str(workspace_id)
    if key not in ids and len(ids) >= settings.run_follow_max:
        raise AppError(
            ErrorCode.RATE_LIMITED,
            f"a connection follows the runs of at most {settings.run_follow_max} workspaces; unfollow one first",
        )
    _, access = await workspace_row(call.core.pool, call.user, workspace_id)  # not_found unless visible
    ids.add(key)
    await call.transport.enter_room(call.sid, run_channel(workspace_id))
    return {"workspace_id": key, "access": access.level}


@events.on("run:unfollow", WorkspaceRef)
async def unfollow(call: EventCall) -> None:
    key = str(call.payload.workspace_id)
    followed(call.session).discard(key)
    await call.transport.leave_room(call.sid, run_channel(key))


@events.rights_changed
async def recheck(conn: Connection) -> None:
    """The user's rights changed: leave the channel of every workspace they may no longer see."""
    ids = followed(conn.session)
    for key in list(ids):
        try:
            await workspace_row(conn.core.pool, conn.user, uuid.UUID(key))
        except AppError as exc:
            if key not in ids:
                continue  # unfollowed meanwhile
            ids.discard(key)
            await conn.transport.leave_room(conn.sid, run_channel(key))
            data = {"workspace_id": key, "reason": "access", "message": exc.message}
            await conn.transport.emit(UNFOLLOWED_EVENT, data, to=conn.sid)
