"""Responses of the learners' progress endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from core_api.http import Query
from core_api.progress import LectureProgressOut


class LearnerOut(BaseModel):
    user_id: uuid.UUID
    display_name: str
    enrolled_at: datetime
    completed_at: datetime | None = Field(description="When the learner completed every lecture.")
    completed_lectures: int
    total_lectures: int
    percent: float = Field(description="Share of the course's lectures completed, 0-100.")
    last_activity_at: datetime | None = Field(description="The learner's latest progress in the course; null: none.")


class LearnerProgressOut(LearnerOut):
    course_id: uuid.UUID
    lectures: list[LectureProgressOut] = Field(description="Every lecture of the course, in order.")


class ContinueItem(BaseModel):
    course_id: uuid.UUID
    course_title: str
    lecture_id: uuid.UUID = Field(description="The lecture to resume.")
    lecture_title: str
    lecture_position: int = Field(description="The lecture's order in the course (0 = first).")
    position_s: float = Field(description="Where to resume in it, in seconds (0: from the start).")
    duration_s: float
    completed_lectures: int
    total_lectures: int
    percent: float
    last_activity_at: datetime | None = Field(description="The learner's latest progress in the course; null: none.")


class ContinueList(BaseModel):
    items: list[ContinueItem]


class ContinueQuery(Query):
    limit: int = Field(5, ge=1, le=200, description="Most courses (capped at STUDYHALL_CONTINUE_MAX_ITEMS).")
