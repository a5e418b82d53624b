"""The course's own messages (also served by :mod:`core_api.courses`) and course management's bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core_api.context import PageQuery
from core_api.http import Input

_CATEGORY_DOC = (
    "The course's category: trimmed, lower-cased, inner whitespace collapsed, at most "
    "STUDYHALL_COURSE_CATEGORY_MAX_LENGTH characters; null or blank for none."
)
_TAGS_DOC = (
    "Tags, each normalised as the category is (at most STUDYHALL_COURSE_TAG_MAX_LENGTH characters); repeats are "
    "dropped; at most STUDYHALL_COURSE_MAX_TAGS of them. Replaces the course's tags."
)


class CourseIn(Input):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=20_000)
    category: str | None = Field(None, max_length=1000, description=_CATEGORY_DOC)
    tags: list[str] = Field(default_factory=list, max_length=200, description=_TAGS_DOC)


class CoursePatch(Input):
    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=20_000)
    category: str | None = Field(None, max_length=1000, description=_CATEGORY_DOC)
    tags: list[str] | None = Field(None, max_length=200, description=_TAGS_DOC)


class CourseRef(BaseModel):
    id: uuid.UUID
    title: str


class CourseOut(BaseModel):
    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    description: str
    status: Literal["draft", "published", "unpublished", "archived"] = Field(
        description="`draft` (owner and admins only), `published` (in the catalogue), `unpublished` and `archived` "
        "(out of the catalogue, no new enrollments; learners already enrolled keep them; archived is read-only)."
    )
    category: str | None = Field(None, description="Normalised category; null when none.")
    tags: list[str] = Field(default_factory=list, description="Normalised tags, in alphabetical order.")
    prerequisites: list[CourseRef] = Field(
        default_factory=list,
        description="Published courses a learner must complete (hold the certificate of) before enrolling here.",
    )
    lecture_count: int
    total_duration_s: float
    price_coins: int | None = Field(
        None, description="The course's price in coins (buy it with `POST /courses/{id}/buy`); null when it is free."
    )
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    archived_at: datetime | None = None
    deleted_at: datetime | None = Field(None, description="Set on a deleted course (only admins see one).")


class CourseListQuery(PageQuery):
    mine: bool = Field(False, description="Only courses the caller owns (drafts included).")
    category: str | None = Field(None, max_length=1000, description="Only courses of this category (normalised).")
    tag: list[str] = Field(
        default_factory=list,
        max_length=200,
        description="Only courses carrying this tag (normalised); repeat it for several: all must match.",
    )
    deleted: bool = Field(False, description="Admins: list deleted courses instead (others get 403).")


class PrerequisitesIn(Input):
    course_ids: list[str] = Field(
        max_length=1000,
        description="Every course a learner must have completed (hold the certificate of) before enrolling in this "
        "one; replaces the current list ([] clears it). Each must be a published course; not this course, and not "
        "one that (at any depth) requires this one. At most STUDYHALL_COURSE_MAX_PREREQUISITES.",
    )
