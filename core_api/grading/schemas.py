"""Typed bodies and answers of quizzes and the gradebook.

Two views of a question, kept apart on purpose: :class:`QuestionKeyOut` (staff only) carries the answer
key, :class:`QuestionView` (what a learner receives inside an attempt) has no field that could hold one.
The hard caps here only bound what a request may carry; the real limits are settings
(``STUDYHALL_QUIZ_*``), checked by :func:`core_api.grading.core.check_limits`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from core_api.http import Input
from core_api.timestamps import Timestamp
from sandbox.models import TestCase

MAX_POINTS = 10_000.0
QuestionKind = Literal["single", "multiple", "true_false", "short", "numeric", "code"]

# --- what instructors write ------------------------------------------------------------------------


class _QuestionBase(Input):
    prompt: str = Field(min_length=1, max_length=100_000, description="The question as the learner reads it.")
    points: float = Field(1.0, gt=0, le=MAX_POINTS, allow_inf_nan=False, description="Worth of a right answer.")


class OptionIn(Input):
    text: str = Field(min_length=1, max_length=100_000)
    correct: bool = Field(False, description="Whether choosing this option is (part of) the right answer.")


class ChoiceQuestionIn(_QuestionBase):
    """Multiple choice. ``single``: exactly one option is correct, the learner picks one. ``multiple``: one or
    more are correct, the learner picks any set; only the exact set scores (all or nothing)."""

    kind: Literal["single", "multiple"]
    options: list[OptionIn] = Field(min_length=2, max_length=100)


class TrueFalseQuestionIn(_QuestionBase):
    kind: Literal["true_false"]
    answer: bool = Field(description="The right answer.")


class ShortQuestionIn(_QuestionBase):
    """A typed answer, right when it matches one accepted answer after normalising both (Unicode NFKC,
    case-folded, runs of whitespace as one space, none at the ends)."""

    kind: Literal["short"]
    accepted: list[Annotated[str, Field(min_length=1, max_length=100_000)]] = Field(min_length=1, max_length=1000)


class NumericQuestionIn(_QuestionBase):
    """A number, right when within ``tolerance`` of ``answer`` (inclusive)."""

    kind: Literal["numeric"]
    answer: float = Field(allow_inf_nan=False, ge=-1e15, le=1e15)
    tolerance: float = Field(0.0, ge=0, le=1e15, allow_inf_nan=False)


class CodeQuestionIn(_QuestionBase):
    """A program, judged by the sandbox on the test cases (hidden from learners). Partial credit: the
    fraction of cases passed times the points."""

    kind: Literal["code"]
    language: str = Field(min_length=1, max_length=32, description="A language id from `GET /languages`.")
    starter: str = Field("", max_length=100_000, description="Code the learner starts from (shown to them).")
    tests: list[TestCase] = Field(min_length=1, max_length=100)


QuestionIn = Annotated[
    ChoiceQuestionIn | TrueFalseQuestionIn | ShortQuestionIn | NumericQuestionIn | CodeQuestionIn,
    Field(discriminator="kind"),
]


class QuizIn(Input):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=20_000)
    time_limit_s: int | None = Field(
        None, ge=10, le=7 * 86400, description="Seconds an attempt may last; null: until the quiz closes."
    )
    attempts_allowed: int = Field(1, ge=1, le=10_000, description="Attempts each learner may start.")
    opens_at: Timestamp | None = Field(None, description="No attempt starts before this time; null: at once.")
    closes_at: Timestamp | None = Field(
        None, description="No attempt starts after this time, and running ones end by then; null: never."
    )
    shuffle_questions: bool = Field(False, description="Each attempt orders the questions its own way.")
    shuffle_options: bool = Field(False, description="Each attempt orders each question's options its own way.")
    results_visible: bool = Field(
        True,
        description="Learners see which questions of a submitted attempt scored (never the right answers); "
        "false: only the score.",
    )
    questions: list[QuestionIn] = Field(min_length=1, max_length=1000)


class QuizPatch(Input):
    """Settings only: questions never change once written (attempts refer to them)."""

    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=20_000)
    time_limit_s: int | None = Field(None, ge=10, le=7 * 86400, description="Applies to attempts started later.")
    attempts_allowed: int | None = Field(None, ge=1, le=10_000)
    opens_at: Timestamp | None = None
    closes_at: Timestamp | None = Field(None, description="Also ends attempts in progress by then.")
    results_visible: bool | None = None


# --- what everyone taking part sees -----------------------------------------------------------------


class QuizOut(BaseModel):
    id: uuid.UUID
    course_id: uuid.UUID
    title: str
    description: str
    time_limit_s: int | None
    attempts_allowed: int
    opens_at: datetime | None
    closes_at: datetime | None
    shuffle_questions: bool
    shuffle_options: bool
    results_visible: bool
    question_count: int
    max_points: float
    created_at: datetime


class OptionView(BaseModel):
    id: str
    text: str


class QuestionView(BaseModel):
    """A question as a learner sees it: no answer key."""

    id: str
    kind: QuestionKind
    prompt: str
    points: float
    options: list[OptionView] | None = Field(description="Choice questions: in this attempt's order.")
    language: str | None = Field(description="Code questions: the language answers are written in.")
    starter: str | None = Field(description="Code questions: code to start from.")


class QuestionResultOut(BaseModel):
    question_id: str
    answered: bool
    correct: bool = Field(description="Full points.")
    points: float
    max_points: float
    verdict: str | None = Field(None, description="Code questions: the judge's verdict (`accepted`, ...).")
    passed: int | None = Field(None, description="Code questions: test cases passed (of `total`).")
    total: int | None = None


class AttemptOut(BaseModel):
    id: uuid.UUID
    quiz_id: uuid.UUID
    user_id: uuid.UUID
    number: int = Field(description="1 for a learner's first attempt at the quiz, and so on.")
    state: Literal["in_progress", "submitted"]
    started_at: datetime
    deadline_at: datetime | None = Field(
        description="The earlier of start + time limit and the quiz's close; answers saved after this (plus a short "
        "grace) are refused."
    )
    saved_at: datetime | None
    submitted_at: datetime | None
    finished_by: Literal["learner", "deadline"] | None = Field(
        description="`deadline`: submitted (or graded) after its deadline, with the answers saved by then."
    )
    questions: list[QuestionView] = Field(description="In this attempt's order (the same on every read).")
    answers: dict[str, Any] = Field(description="The saved answers, by question id.")
    score: float | None
    max_points: float
    results: list[QuestionResultOut] | None = Field(
        description="Per question, once submitted (null for learners when the quiz hides them)."
    )


class AnswersIn(Input):
    """Answers by question id: ``single`` an option id, ``multiple`` a list of option ids, ``true_false`` a
    boolean, ``short`` a string, ``numeric`` a number, ``code`` the program's source. ``null`` clears one."""

    answers: dict[Annotated[str, Field(max_length=64)], Any] = Field(max_length=1000)


class SubmitIn(Input):
    answers: dict[Annotated[str, Field(max_length=64)], Any] | None = Field(
        None, max_length=1000, description="Saved first, as `PUT .../answers` does (ignored past the deadline)."
    )


# --- staff only ------------------------------------------------------------------------------------


class QuestionKeyOut(QuestionView):
    """A question with its answer key (course staff only)."""

    key: dict[str, Any] = Field(
        description="`correct` option ids (choice), `value` (true/false, numeric) and `tolerance`, `accepted` "
        "answers (short), `tests` (code)."
    )


class QuizKeyOut(QuizOut):
    questions: list[QuestionKeyOut] = Field(description="In the order written, with answer keys.")


class OptionStat(BaseModel):
    id: str
    text: str
    chosen: int = Field(description="Submitted attempts whose answer chose this option.")


class QuestionStatOut(BaseModel):
    question_id: str
    kind: QuestionKind
    prompt: str
    points: float
    answered: int = Field(description="Submitted attempts that answered it.")
    correct: int = Field(description="Submitted attempts that scored its full points.")
    correct_rate: float | None = Field(description="`correct` / `answered`; null when nobody answered.")
    mean_points: float | None = Field(description="Mean points over the attempts that answered it.")
    options: list[OptionStat] | None = Field(description="Choice and true/false questions: how often each was chosen.")


class QuizStatsOut(BaseModel):
    quiz_id: uuid.UUID
    attempts: int = Field(description="Submitted attempts (every attempt counts, not only each learner's best).")
    learners: int = Field(description="Learners with at least one submitted attempt.")
    questions: list[QuestionStatOut]


class GradeColumn(BaseModel):
    kind: Literal["assignment", "quiz"]
    id: uuid.UUID
    title: str
    max_points: float


class GradeRow(BaseModel):
    user_id: uuid.UUID
    display_name: str
    email: str
    scores: list[float | None] = Field(description="One per column, null when there is nothing graded yet.")
    total: float = Field(description="The sum of the scores present.")


class GradebookOut(BaseModel):
    course_id: uuid.UUID
    columns: list[GradeColumn]
    rows: list[GradeRow] = Field(description="Every enrolled learner, by display name.")
    max_total: float
