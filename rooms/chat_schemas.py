"""Payloads of the chat events, validated at the edge (strict types, unknown fields refused, size limits).

The body limit here is a coarse cap on what is parsed at all; the configured ``chat_max_body`` applies
after cleaning (see :func:`rooms.chat_core.clean_body`).
"""

from __future__ import annotations

import uuid

from pydantic import Field

from core_api.http import Input

BODY_FIELD_MAX = 16_000
SEQ_MAX = 2**62
MUTE_MAX_S = 30 * 86400
SLOW_MODE_MAX_S = 3600


class RoomRef(Input):
    room_id: uuid.UUID


class SendIn(RoomRef):
    body: str = Field(max_length=BODY_FIELD_MAX)
    client_msg_id: str = Field(min_length=1, max_length=64)


class HistoryIn(RoomRef):
    before_seq: int | None = Field(None, ge=1, le=SEQ_MAX)
    after_seq: int | None = Field(None, ge=0, le=SEQ_MAX)
    limit: int = Field(50, ge=1, le=200)


class MessageRef(RoomRef):
    message_id: uuid.UUID


class EditIn(MessageRef):
    body: str = Field(max_length=BODY_FIELD_MAX)


class DeleteIn(MessageRef):
    pass


class ReactIn(MessageRef):
    emoji: str = Field(min_length=1, max_length=16)
    on: bool


class TypingIn(RoomRef):
    typing: bool


class MemberRef(RoomRef):
    user_id: uuid.UUID


class MuteIn(MemberRef):
    seconds: int = Field(ge=0, le=MUTE_MAX_S, description="0 lifts the mute.")


class KickIn(MemberRef):
    pass


class BanIn(MemberRef):
    on: bool


class SlowModeIn(RoomRef):
    seconds: int = Field(ge=0, le=SLOW_MODE_MAX_S, description="0 turns slow mode off.")


class ReadIn(RoomRef):
    """``chat:read``: the caller has read the room up to ``seq`` (inclusive)."""

    seq: int = Field(ge=0, le=SEQ_MAX)
