"""A user's sessions: list them, end one, end every other (see the package docstring)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from core_api.auth import TAG, end_sessions
from core_api.context import Core, audit, core_of, rights_changed
from core_api.errors import not_found
from core_api.http import Api, Call, Principal

api = Api()


class SessionOut(BaseModel):
    id: uuid.UUID
    created_at: datetime = Field(description="When this sign-in happened.")
    last_used_at: datetime = Field(description="When its tokens were last renewed (about every access-token lifetime).")
    expires_at: datetime = Field(description="When it ends unless used again.")
    user_agent: str = Field(description="The browser or program that signed in (its User-Agent, shortened).")
    address: str = Field(description="The address it signed in from.")
    current: bool = Field(description="True for the session of the token that asked.")


class SessionList(BaseModel):
    items: list[SessionOut]


class EndedOut(BaseModel):
    ended: int = Field(description="How many sessions were ended.")


async def list_sessions(core: Core, user: Principal) -> list[SessionOut]:
    rows = await core.pool.fetch(
        "SELECT id, created_at, last_used_at, expires_at, user_agent, address FROM sessions"
        " WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() ORDER BY last_used_at DESC, id LIMIT $2",
        user.id,
        core.settings.sessions_listed_max,
    )
    return [SessionOut(**dict(r), current=r["id"] == user.session_id) for r in rows]


async def end_one(core: Core, user: Principal, session_id: uuid.UUID) -> None:
    async with core.transaction() as tx:
        if not await end_sessions(tx.conn, user.id, only=session_id):
            raise not_found("no such session of yours (or it has already ended)")
        await audit(tx, user.id, "session.ended", "session", session_id)
        rights_changed(tx, user.id)  # its open Socket.IO connections are closed


async def end_others(core: Core, user: Principal) -> int:
    async with core.transaction() as tx:
        ended = await end_sessions(tx.conn, user.id, keep=user.session_id)
        await audit(tx, user.id, "session.ended_others", "user", user.id, ended=ended)
        if ended:
            rights_changed(tx, user.id)
    return ended


@api.route(
    "GET",
    "/me/sessions",
    summary="Your sessions: where and when you are signed in",
    description="Every sign-in that has not ended, most recently used first (at most "
    "`STUDYHALL_SESSIONS_LISTED_MAX`); `current` marks the one asking.",
    tag=TAG,
    response=SessionList,
)
async def get_sessions(call: Call) -> SessionList:
    return SessionList(items=await list_sessions(core_of(call), call.me))


@api.route(
    "DELETE",
    "/me/sessions/{session_id}",
    summary="End one of your sessions",
    description="Its refresh token stops working, and so does its access token, at its next request (answered "
    "401 `unauthorized`). 404 when the session is not yours or has already ended. Audited (`session.ended`).",
    tag=TAG,
    status=204,
    errors=[404],
)
async def delete_session(call: Call) -> None:
    await end_one(core_of(call), call.me, call.params["session_id"])


@api.route(
    "DELETE",
    "/me/sessions",
    summary="Sign out everywhere else: end every session but the one asking",
    tag=TAG,
    response=EndedOut,
)
async def delete_other_sessions(call: Call) -> EndedOut:
    return EndedOut(ended=await end_others(core_of(call), call.me))
