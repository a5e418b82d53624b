"""Pure rules: where a learner resumes a course."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class LectureState:
    """One lecture of a course and the learner's progress in it."""

    lecture_id: uuid.UUID
    title: str
    position: int
    duration_s: float
    position_s: float
    completed: bool
    updated_at: datetime | None


def resume_point(lectures: list[LectureState]) -> LectureState | None:
    """The lecture to resume, with its saved position: the one last watched if it is unfinished; otherwise
    the next unfinished lecture after it in the course's order, or the first unfinished one before it.
    None when every lecture is completed (or there are none)."""
    ordered = sorted(lectures, key=lambda lec: lec.position)
    unfinished = [lec for lec in ordered if not lec.completed]
    if not unfinished:
        return None
    touched = [lec for lec in ordered if lec.updated_at is not None]
    if not touched:
        return unfinished[0]
    last = max(touched, key=lambda lec: (lec.updated_at, lec.position))
    if not last.completed:
        return last
    after = [lec for lec in unfinished if lec.position > last.position]
    return (after or unfinished)[0]
