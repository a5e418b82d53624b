"""Request bodies of course management (responses are :class:`core_api.courses.CourseOut`)."""

from __future__ import annotations

from pydantic import Field

from core_api.http import Input


class PrerequisitesIn(Input):
    course_ids: list[str] = Field(
        max_length=1000,
        description="Every course a learner must have completed (hold the certificate of) before enrolling in this "
        "one; replaces the current list ([] clears it). Each must be a published course; not this course, and not "
        "one that (at any depth) requires this one. At most STUDYHALL_COURSE_MAX_PREREQUISITES.",
    )
