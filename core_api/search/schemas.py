"""The search endpoint's query string and answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core_api.http import Query

Kind = Literal["courses", "lectures", "messages", "posts", "users"]
KINDS: tuple[Kind, ...] = ("courses", "lectures", "messages", "posts", "users")
"""Every kind, in the order answers list them. A new kind is one more name here, one more query in ``store``
and one more group in :class:`SearchOut`."""
ADMIN_ONLY: frozenset[Kind] = frozenset({"users"})


class SearchQuery(Query):
    q: str = Field(
        max_length=1000,
        description="What to look for: words, all of which must match (each also as the start of a longer word "
        "once it has `STUDYHALL_SEARCH_MIN_PREFIX_CHARS` characters). Punctuation is ignored. At most "
        "`STUDYHALL_SEARCH_MAX_QUERY_CHARS` characters and `STUDYHALL_SEARCH_MAX_WORDS` words.",
    )
    kinds: str | None = Field(
        None,
        max_length=200,
        description="Comma-separated kinds to search: `courses`, `lectures`, `messages`, `posts`, `users` "
        "(admins only). Default: every kind the caller may search.",
    )
    limit: int = Field(
        10, ge=1, le=200, description="Most results of each kind (at most `STUDYHALL_SEARCH_MAX_LIMIT`)."
    )
    cursor: str | None = Field(
        None,
        max_length=300,
        description="A group's `next_cursor`, for that kind's next page; `kinds` must then name that kind alone.",
    )


class Segment(BaseModel):
    """A piece of a snippet: ``match`` pieces are what the query matched (shown highlighted)."""

    text: str
    match: bool


class Hit(BaseModel):
    id: uuid.UUID
    rank: float = Field(description="Relevance; higher is better. Comparable within one kind only.")
    snippet: list[Segment] = Field(description="The text around the matches, matches marked.")


class CourseHit(Hit):
    owner_id: uuid.UUID
    title: str
    status: Literal["draft", "published"]


class LectureHit(Hit):
    course_id: uuid.UUID
    course_title: str
    position: int
    title: str


class MessageHit(Hit):
    room_id: uuid.UUID
    room_name: str
    seq: int
    author_id: uuid.UUID
    author_name: str
    created_at: datetime


class PostHit(Hit):
    """A forum post (a topic's opening post also stands for its title). The web app links to
    ``/topics/{topic_id}``; ``id`` is the post's."""

    topic_id: uuid.UUID
    topic_title: str
    title_snippet: list[Segment] = Field(description="The topic's title, matches marked.")
    community_id: uuid.UUID | None = Field(description="The board's community (null for a course board).")
    course_id: uuid.UUID | None = Field(description="The board's course (null for a community board).")
    depth: int = Field(description="0 for the topic's opening post, else how deep the reply is.")
    author_id: uuid.UUID
    author_name: str
    created_at: datetime


class UserHit(Hit):
    display_name: str
    email: str
    role: str


class CourseGroup(BaseModel):
    items: list[CourseHit]
    next_cursor: str | None


class LectureGroup(BaseModel):
    items: list[LectureHit]
    next_cursor: str | None


class MessageGroup(BaseModel):
    items: list[MessageHit]
    next_cursor: str | None


class PostGroup(BaseModel):
    items: list[PostHit]
    next_cursor: str | None


class UserGroup(BaseModel):
    items: list[UserHit]
    next_cursor: str | None


class SearchOut(BaseModel):
    """Results grouped by kind, best first; a kind not searched is null."""

    words: list[str] = Field(description="The words searched for, as the query was read.")
    courses: CourseGroup | None = Field(None, description="Courses the caller may see (drafts: owner and admins).")
    lectures: LectureGroup | None = Field(None, description="Lectures of courses the caller may see.")
    messages: MessageGroup | None = Field(
        None, description="Chat messages of rooms the caller is a member of (not banned); never deleted ones."
    )
    posts: PostGroup | None = Field(
        None,
        description="Forum posts (and topic titles, through their opening post) of boards the caller may read: "
        "public communities' for everyone, private ones' for members, course boards for enrolled learners and the "
        "course owner, every board for admins; never deleted posts.",
    )
    users: UserGroup | None = Field(None, description="Users by name or email (platform admins only).")
