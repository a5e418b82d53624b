"""Typed messages of the rooms API: REST bodies and answers, and the payloads of the ``room:*`` events.

Every input is an :class:`~core_api.http.Input` (unknown fields refused, no type coercion) with limits;
answers are plain pydantic models, serialised for REST and, with ``model_dump(mode="json")``, for acks.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator

from core_api.context import PageQuery
from core_api.http import Input

OpenRoomKind = Literal["study", "watch", "ide", "contest", "live"]
"""The kinds ``POST /rooms`` opens; a direct-message conversation (``dm``) is opened with ``POST /dms``."""
RoomKind = Literal["study", "watch", "ide", "contest", "live", "dm"]
RoomVisibility = Literal["public", "community", "private"]
RoomRole = Literal["host", "moderator", "member"]
PresenceState = Literal["joined", "left"]


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable (no control characters)")
    return value


RoomName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120), AfterValidator(_printable)
]

# --- REST ----------------------------------------------------------------------------------------


class RoomIn(Input):
    name: RoomName
    kind: OpenRoomKind = Field(description="What the room is for: `study`, `watch`, `ide`, `contest` or `live`.")
    visibility: RoomVisibility = Field(
        description="`public`: every signed-in user; `community`: the community's members (needs "
        "`community_id`); `private`: invited members only."
    )
    community_id: uuid.UUID | None = Field(None, description="The community the room belongs to; you must be in it.")
    course_id: uuid.UUID | None = Field(None, description="A course the room is about; you must be able to see it.")


class RoomOut(BaseModel):
    id: uuid.UUID
    name: str
    kind: RoomKind
    visibility: RoomVisibility
    community_id: uuid.UUID | None
    course_id: uuid.UUID | None
    created_by: uuid.UUID
    created_at: datetime
    archived_at: datetime | None = Field(description="Set once archived: readable, no longer joinable.")
    member_count: int = Field(description="Members who are not banned.")
    my_role: RoomRole | None = Field(description="The caller's room role; null when not a member (or banned).")


class RoomListQuery(PageQuery):
    community_id: uuid.UUID | None = Field(None, description="Only rooms of this community.")
    kind: RoomKind | None = Field(
        None, description="Only rooms of this kind. Direct-message conversations (`dm`) are listed only when asked."
    )
    include_archived: bool = Field(False, description="Also list archived rooms.")
    mine: bool = Field(False, description="Only rooms the caller is a member of (not banned from).")


class RoomMemberOut(BaseModel):
    user_id: uuid.UUID
    display_name: str
    role: RoomRole
    joined_at: datetime


class InviteIn(Input):
    user_id: uuid.UUID | None = Field(None, description="Who to invite; or give `email` instead.")
    email: str | None = Field(
        None, min_length=1, max_length=254, description="The invitee's account email (any case), instead of `user_id`."
    )
    role: Literal["member", "moderator"] = Field("member", description="`moderator` only when the host invites.")

    @model_validator(mode="after")
    def _one_invitee(self) -> InviteIn:
        if (self.user_id is None) == (self.email is None):
            raise ValueError("give exactly one of user_id and email")
        return self


class RoomRoleIn(Input):
    role: RoomRole = Field(description="Making another member `host` hands the room over; the old host moderates.")


# --- Socket.IO -----------------------------------------------------------------------------------


class RoomRef(Input):
    """Payload of ``room:join`` and ``room:leave``."""

    room_id: uuid.UUID


JOIN_MANY_FIELD_MAX = 1000
"""A coarse cap on what ``room:join_many`` parses at all; ``STUDYHALL_ROOM_JOIN_MANY_MAX_ROOMS`` applies after."""
SEQ_MAX = 2**62


class RoomResume(Input):
    """One room of ``room:join_many``: join it, with the chat messages after ``after_seq``."""

    room_id: uuid.UUID
    after_seq: int | None = Field(
        None,
        ge=0,
        le=SEQ_MAX,
        description="The highest contiguous seq the client holds; null: the last messages, as room:join.",
    )


class JoinManyIn(Input):
    """Payload of ``room:join_many``: the rooms to join (or rejoin after a reconnect), each once."""

    rooms: list[RoomResume] = Field(min_length=1, max_length=JOIN_MANY_FIELD_MAX)


class UserRef(BaseModel):
    id: str
    display_name: str


class PresenceEvent(BaseModel):
    """``room:presence``, sent to ``room:<id>`` when a user's first connection enters or last one leaves."""

    room_id: str
    user: UserRef
    state: PresenceState
    rev: int = Field(description="The room's presence revision this change made (see room:join's presence_rev).")
