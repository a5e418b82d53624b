"""Typed messages of live sessions: REST bodies and answers, and the ``live:*`` Socket.IO payloads.

Every field a client sends has a size limit; SDP sizes are also capped by
``STUDYHALL_LIVE_MAX_SDP_BYTES`` when the offer is handled.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core_api.context import PageQuery
from core_api.http import Input
from core_api.timestamps import Timestamp

SessionStatus = Literal["scheduled", "live", "ended", "cancelled"]
MAX_SDP_CHARS = 262_144  # the schema's outer bound; the setting is the one that applies


class LiveSessionIn(Input):
    title: str = Field(min_length=1, max_length=200)
    starts_at: Timestamp = Field(description="When the session starts (ISO-8601 with a timezone); in the future.")
    duration_minutes: int = Field(
        60, ge=1, le=1440, description="Planned length; at most `STUDYHALL_LIVE_MAX_DURATION_MINUTES`."
    )
    course_id: uuid.UUID | None = Field(
        None,
        description="The course it teaches (its enrolled learners are notified). Omitted: the room's course, if "
        "any. Naming a course needs its instructor (or an admin).",
    )
    host_id: uuid.UUID | None = Field(
        None,
        description="Who goes live; omitted: the caller. Must be a room host/moderator (as "
        "`STUDYHALL_LIVE_SCHEDULE_ROOM_ROLE` says) or the course's instructor.",
    )


class HostRef(BaseModel):
    id: uuid.UUID
    display_name: str


class LiveSessionOut(BaseModel):
    id: uuid.UUID
    room_id: uuid.UUID
    course_id: uuid.UUID | None
    title: str
    starts_at: datetime
    duration_minutes: int
    ends_at: datetime = Field(description="The planned end: `starts_at` + `duration_minutes`.")
    host: HostRef
    status: SessionStatus = Field(
        description="`scheduled` until the host goes live (`live:start`), then `live`, `ended` once the host "
        "stops it; `cancelled` if cancelled before."
    )
    created_at: datetime
    went_live_at: datetime | None
    ended_at: datetime | None
    cancelled_at: datetime | None


class LiveSessionQuery(PageQuery):
    include: Literal["upcoming", "all"] = Field(
        "upcoming",
        description="`upcoming`: not cancelled and not over (planned end ahead, or live now); `all`: every session.",
    )


# --- Socket.IO payloads --------------------------------------------------------------------------


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SessionRef(Payload):
    session_id: uuid.UUID


class OfferIn(Payload):
    session_id: uuid.UUID
    sdp: str = Field(min_length=1, max_length=MAX_SDP_CHARS, description="A complete (non-trickle) SDP offer.")
    type: Literal["offer"] = "offer"


class HandIn(Payload):
    session_id: uuid.UUID
    raised: bool = True


class UserAction(Payload):
    session_id: uuid.UUID
    user_id: uuid.UUID


class MuteIn(Payload):
    session_id: uuid.UUID
    user_id: uuid.UUID
    kind: Literal["audio", "video", "all"] = "all"


class StopIn(Payload):
    session_id: uuid.UUID
    user_id: uuid.UUID | None = Field(
        None, description="Whose publishing to stop; omitted: the whole session ends (host, moderator)."
    )


class RecordIn(Payload):
    session_id: uuid.UUID
    on: bool = Field(description="`true` starts recording, `false` stops it.")
