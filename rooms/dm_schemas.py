"""Typed bodies and answers of the direct-message API (``/dms``) and of blocks (``/me/blocks``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from core_api.context import PageQuery
from core_api.http import Input

PARTICIPANTS_FIELD_MAX = 100
"""A coarse cap on what is parsed at all; ``STUDYHALL_DM_MAX_PARTICIPANTS`` applies after."""


class DmIn(Input):
    user_ids: list[uuid.UUID] = Field(
        min_length=1,
        max_length=PARTICIPANTS_FIELD_MAX,
        description="The other participants (the caller is always one; repeats and the caller's own id are "
        "ignored). At most `STUDYHALL_DM_MAX_PARTICIPANTS` people in all.",
    )


class Participant(BaseModel):
    id: uuid.UUID
    display_name: str


class LastMessage(BaseModel):
    seq: int
    author: Participant
    excerpt: str = Field(description="The start of the body; empty for a deleted message.")
    deleted: bool
    created_at: datetime


class ConversationOut(BaseModel):
    id: uuid.UUID = Field(description="The conversation's room id: open it like any room (room:join, chat:*).")
    title: str = Field(description="The other participants' current display names.")
    members: list[Participant] = Field(description="Every participant, the caller included.")
    created_by: uuid.UUID
    created_at: datetime
    last_seq: int = Field(description="The seq of the newest message (0 before the first).")
    last_read_seq: int = Field(description="How far the caller has read (chat:read).")
    unread: int = Field(
        description="Messages of others after last_read_seq, not deleted; counted up to 1000 (1000 means more)."
    )
    last_message: LastMessage | None
    created: bool = Field(False, description="POST /dms: true when this call created the conversation.")


class DmListQuery(PageQuery):
    pass


class UnreadOut(BaseModel):
    conversations: int = Field(description="Conversations with at least one unread message.")
    messages: int = Field(description="Unread messages over all conversations (each counted up to 1000).")


class BlockOut(BaseModel):
    user_id: uuid.UUID
    display_name: str
    created_at: datetime


class BlocksOut(BaseModel):
    items: list[BlockOut] = Field(description="Everyone the caller has blocked, oldest block first.")
