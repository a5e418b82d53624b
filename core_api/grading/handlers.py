"""REST of quizzes and the gradebook: parse, authorize (in the service), answer."""

from __future__ import annotations

from core_api.context import Page, PageQuery
from core_api.grading.core import gradebook_csv
from core_api.grading.schemas import (
    AnswersIn,
    AttemptOut,
    GradebookOut,
    QuizIn,
    QuizKeyOut,
    QuizOut,
    QuizPatch,
    QuizStatsOut,
    SubmitIn,
)
from core_api.grading.service import GRADING, Grading
from core_api.http import Api, Call, Download, Reply

api = Api()
TAG_QUIZ = "quizzes"
TAG_BOOK = "gradebook"

_LEARNER_SAFE = (
    "Learners never receive an answer key: questions reach them only inside an attempt, without the right "
    "options, accepted answers, numeric answer or test cases."
)


def grading(call: Call) -> Grading:
    return call.request.app[GRADING]


@api.route(
    "POST",
    "/courses/{course_id}/quizzes",
    summary="Write a quiz (course owner, admin)",
    description="Questions: `single`/`multiple` choice, `true_false`, `short` (normalised match against "
    "accepted answers), `numeric` (with a tolerance) and `code` (judged by the sandbox on hidden test cases). "
    "Sizes are limited by the `STUDYHALL_QUIZ_*` settings. Questions cannot change afterwards. The answer "
    "returns the quiz with its answer key.",
    tag=TAG_QUIZ,
    body=QuizIn,
    response=QuizKeyOut,
    status=201,
    errors=[403],
)
async def post_quiz(call: Call) -> QuizKeyOut:
    return await grading(call).create(call.me, call.params["course_id"], call.body)


@api.route(
    "GET",
    "/courses/{course_id}/quizzes",
    summary="A course's quizzes, without questions (course owner, admin, enrolled learners)",
    tag=TAG_QUIZ,
    query=PageQuery,
    response=Page[QuizOut],
    errors=[403],
)
async def get_quizzes(call: Call) -> Page[QuizOut]:
    return await grading(call).list_quizzes(call.me, call.params["course_id"], call.query)


@api.route(
    "GET",
    "/quizzes/{quiz_id}",
    summary="One quiz, without questions (course owner, admin, enrolled learners)",
    tag=TAG_QUIZ,
    response=QuizOut,
    errors=[403],
)
async def get_quiz(call: Call) -> QuizOut:
    return await grading(call).get(call.me, call.params["quiz_id"])


@api.route(
    "PATCH",
    "/quizzes/{quiz_id}",
    summary="Change a quiz's settings (course owner, admin)",
    description="Title, description, time limit, attempts allowed, open and close times, whether results are "
    "shown. A new time limit applies to attempts started afterwards; a closing time also ends attempts in "
    "progress by then.",
    tag=TAG_QUIZ,
    body=QuizPatch,
    response=QuizOut,
    errors=[403],
)
async def patch_quiz(call: Call) -> QuizOut:
    return await grading(call).update(call.me, call.params["quiz_id"], call.body)


@api.route(
    "GET",
    "/quizzes/{quiz_id}/questions",
    summary="A quiz's questions with their answer keys (course owner, admin)",
    tag=TAG_QUIZ,
    response=QuizKeyOut,
    errors=[403],
)
async def get_quiz_key(call: Call) -> QuizKeyOut:
    return await grading(call).key(call.me, call.params["quiz_id"])


@api.route(
    "POST",
    "/quizzes/{quiz_id}/attempts",
    summary="Start an attempt (enrolled learners); answers the one in progress if there is one",
    description="201 with a new attempt, its questions in its own order (shuffled per attempt when the quiz "
    "says so, the same on every read); 200 with the attempt already in progress. 409 before the quiz opens, "
    "after it closes, or once every allowed attempt is used. " + _LEARNER_SAFE,
    tag=TAG_QUIZ,
    response=AttemptOut,
    status=201,
    errors=[403, 409],
    extra_statuses={200: "The attempt already in progress"},
)
async def post_attempt(call: Call) -> Reply:
    attempt, created = await grading(call).start(call.me, call.params["quiz_id"])
    return Reply(attempt, 201 if created else 200)


@api.route(
    "GET",
    "/quizzes/{quiz_id}/attempts",
    summary="Attempts at a quiz: everyone's for the course owner and admins, a learner's own otherwise",
    tag=TAG_QUIZ,
    query=PageQuery,
    response=Page[AttemptOut],
    errors=[403],
)
async def get_attempts(call: Call) -> Page[AttemptOut]:
    return await grading(call).attempts(call.me, call.params["quiz_id"], call.query)


@api.route(
    "GET",
    "/attempts/{attempt_id}",
    summary="One attempt (its author, the course owner, admin)",
    description="An attempt past its deadline is graded with its saved answers when read. " + _LEARNER_SAFE,
    tag=TAG_QUIZ,
    response=AttemptOut,
    errors=[403],
)
async def get_attempt(call: Call) -> AttemptOut:
    return await grading(call).attempt(call.me, call.params["attempt_id"])


@api.route(
    "PUT",
    "/attempts/{attempt_id}/answers",
    summary="Save answers of an attempt in progress (its author)",
    description="Merged into the saved ones (`null` clears one). 409 once submitted or past the deadline "
    "(plus `STUDYHALL_QUIZ_DEADLINE_GRACE_S`); 429 past `STUDYHALL_QUIZ_SAVE_RATE_COUNT` saves per window.",
    tag=TAG_QUIZ,
    body=AnswersIn,
    response=AttemptOut,
    errors=[403, 409, 429],
)
async def put_answers(call: Call) -> AttemptOut:
    return await grading(call).save(call.me, call.params["attempt_id"], call.body.answers)


@api.route(
    "POST",
    "/attempts/{attempt_id}/submit",
    summary="Submit an attempt to be graded (its author)",
    description="Grades every answer on the server (code answers in the sandbox; 503 when it cannot run, "
    "submit again later). Past the deadline the attempt is graded with the answers saved by then and any "
    "sent along are ignored (`finished_by: deadline`). Submitting again answers the graded attempt.",
    tag=TAG_QUIZ,
    body=SubmitIn,
    response=AttemptOut,
    errors=[403, 409, 429, 503],
)
async def post_submit(call: Call) -> AttemptOut:
    return await grading(call).submit(call.me, call.params["attempt_id"], call.body.answers)


@api.route(
    "GET",
    "/quizzes/{quiz_id}/stats",
    summary="Per-question statistics of a quiz (course owner, admin)",
    description="Over every submitted attempt: how many answered each question, how many got it right, the "
    "mean points, and for choice and true/false questions how often each option was chosen.",
    tag=TAG_QUIZ,
    response=QuizStatsOut,
    errors=[403],
)
async def get_quiz_stats(call: Call) -> QuizStatsOut:
    return await grading(call).stats(call.me, call.params["quiz_id"])


@api.route(
    "GET",
    "/courses/{course_id}/gradebook",
    summary="The course's gradebook (course owner, admin)",
    description="Every enrolled learner × every assignment and quiz: a quiz counts its best submitted "
    "attempt, an assignment its latest graded submission; null where nothing is graded yet.",
    tag=TAG_BOOK,
    response=GradebookOut,
    errors=[403],
)
async def get_gradebook(call: Call) -> GradebookOut:
    return await grading(call).gradebook(call.me, call.params["course_id"])


@api.route(
    "GET",
    "/courses/{course_id}/gradebook.csv",
    summary="The course's gradebook as CSV (course owner, admin)",
    description="The same table as `GET .../gradebook`, one row per learner. Text cells starting with `=`, "
    "`+`, `-`, `@`, tab or carriage return get a leading `'` so that spreadsheets show them as text.",
    tag=TAG_BOOK,
    errors=[403],
    produces="text/csv",
)
async def get_gradebook_csv(call: Call) -> Download:
    book = await grading(call).gradebook(call.me, call.params["course_id"])
    return Download(gradebook_csv(book), "text/csv", f"gradebook-{book.course_id}.csv")
