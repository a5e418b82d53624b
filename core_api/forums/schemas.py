"""Typed bodies and answers of the forum API, validated at the edge with coarse size caps (the configured
limits, ``STUDYHALL_FORUM_*``, apply after cleaning)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from core_api.context import PageQuery
from core_api.http import Input

BODY_FIELD_MAX = 100_000
TITLE_MAX = 200


class TopicIn(Input):
    title: str = Field(min_length=1, max_length=TITLE_MAX * 2, description=f"At most {TITLE_MAX} characters.")
    body: str = Field(min_length=1, max_length=BODY_FIELD_MAX, description="The opening post (plain text).")


class ReplyIn(Input):
    body: str = Field(min_length=1, max_length=BODY_FIELD_MAX)
    parent_id: uuid.UUID | None = Field(
        None, description="The post this answers (a post of the same topic); the opening post when left out."
    )


class PostEditIn(Input):
    body: str = Field(min_length=1, max_length=BODY_FIELD_MAX)


class VoteIn(Input):
    value: int = Field(ge=-1, le=1, description="+1 up, -1 down, 0 takes the caller's vote back.")


class FlagIn(Input):
    on: bool


class AcceptIn(Input):
    post_id: uuid.UUID | None = Field(description="A reply of this topic; null clears the accepted answer.")


class Author(BaseModel):
    id: uuid.UUID
    display_name: str


class PostOut(BaseModel):
    id: uuid.UUID
    topic_id: uuid.UUID
    parent_id: uuid.UUID | None = Field(description="Null for the opening post.")
    depth: int = Field(description="0 for the opening post, 1 for a reply to it, and so on.")
    author: Author
    body: str = Field(description="Empty when deleted.")
    created_at: datetime
    edited_at: datetime | None
    deleted: bool
    score: int = Field(description="Up votes minus down votes.")
    my_vote: int = Field(description="The caller's vote: 1, -1 or 0.")
    accepted: bool


class TopicOut(BaseModel):
    id: uuid.UUID
    community_id: uuid.UUID | None
    course_id: uuid.UUID | None
    title: str
    author: Author
    created_at: datetime
    last_activity_at: datetime
    pinned: bool
    locked: bool
    accepted_post_id: uuid.UUID | None
    reply_count: int
    score: int = Field(description="The opening post's score.")
    excerpt: str = Field(description="The start of the opening post.")


class TopicDetail(TopicOut):
    opening: PostOut
    can_post: bool = Field(description="Whether the caller may reply (a reader of a board need not be a poster).")
    can_moderate: bool = Field(description="Pin, lock, accept any answer, delete others' posts.")


class TopicListQuery(PageQuery):
    pass


class BoardOut(BaseModel):
    items: list[TopicOut] = Field(description="On the first page, pinned topics first; then by last activity.")
    next_cursor: str | None
    can_post: bool
    can_moderate: bool
