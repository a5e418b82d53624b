"""Quiz use cases: write, take (start, save, submit), grade, statistics and the gradebook.

Who may do what: the course's owner and admins write quizzes, read their answer keys, everyone's attempts,
the statistics and the gradebook; enrolled learners take quizzes and read their own attempts. Learners
receive questions only inside an attempt and never an answer key (core.question_view).

Grading is on the server, on submit. Code answers are judged by the sandbox (the executions' runner, as
contests judge) before the attempt is locked, so no transaction waits on the judge. An attempt past its
deadline (time limit, or the quiz closing) is graded with the answers saved by then, whoever notices
first: the learner submitting (any answers sent along are ignored), or any read of the attempt, the
quiz's attempts, its statistics or the gradebook.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from aiohttp import web

from core_api.announcements.fanout import notify_learners
from core_api.context import CORE, Core, Page, PageQuery, decode_cursor, new_id, page_of
from core_api.courses import owned_course, visible_course
from core_api.db import Connection, Record
from core_api.enrollments import enrollment_of, is_staff
from core_api.errors import AppError, ErrorCode, conflict, forbidden, invalid, not_found
from core_api.executions import EXECUTIONS, Executions
from core_api.grading import core, store
from core_api.grading.core import CodeOutcome, Question
from core_api.grading.schemas import (
    AttemptOut,
    GradebookOut,
    GradeColumn,
    GradeRow,
    QuestionResultOut,
    QuizIn,
    QuizKeyOut,
    QuizOut,
    QuizPatch,
    QuizStatsOut,
)
from core_api.http import Principal
from sandbox.core import InvalidRequest
from sandbox.fair import FairGate
from sandbox.models import JudgeRequest, TestCase
from sandbox.runner import QueueFull, SandboxUnavailable

log = logging.getLogger(__name__)


def quiz_out(row: Record) -> QuizOut:
    fields = {k: row[k] for k in QuizOut.model_fields if k != "question_count"}
    return QuizOut(**fields, question_count=len(row["questions"]))


def quiz_key_out(row: Record) -> QuizKeyOut:
    return QuizKeyOut(**quiz_out(row).model_dump(), questions=[core.question_with_key(q) for q in row["questions"]])


def deadline_of(attempt: Record, quiz: Record) -> datetime | None:
    """When an attempt ends: its own deadline (fixed at its start), or the quiz's closing time if the
    instructor has moved it earlier since."""
    times = [t for t in (attempt["deadline_at"], quiz["closes_at"]) if t is not None]
    return min(times) if times else None


def attempt_out(attempt: Record, quiz: Record, staff: bool) -> AttemptOut:
    questions = core.arrange(quiz["questions"], attempt["seed"], quiz["shuffle_questions"], quiz["shuffle_options"])
    results = attempt["results"]
    if results is not None and not staff and not quiz["results_visible"]:
        results = None
    return AttemptOut(
        id=attempt["id"], quiz_id=attempt["quiz_id"], user_id=attempt["user_id"], number=attempt["number"],
        state="in_progress" if attempt["submitted_at"] is None else "submitted", started_at=attempt["started_at"],
        deadline_at=deadline_of(attempt, quiz), saved_at=attempt["saved_at"], submitted_at=attempt["submitted_at"],
        finished_by=attempt["finished_by"], questions=questions, answers=attempt["answers"], score=attempt["score"],
        max_points=quiz["max_points"], results=[QuestionResultOut(**r) for r in results] if results else None,
    )  # fmt: skip


class TimeUp(AppError):
    """An attempt's deadline has passed: its answers can no longer change."""

    def __init__(self, deadline: datetime | None) -> None:
        when = deadline.isoformat() if deadline else "passed"
        super().__init__(
            ErrorCode.CONFLICT,
            f"time is up: this attempt's deadline was {when}; submit it to have it graded with the answers "
            "saved by then",
        )


class AlreadySubmitted(AppError):
    def __init__(self) -> None:
        super().__init__(ErrorCode.CONFLICT, "this attempt is already submitted")


class Grading:
    """Quizzes and the gradebook of one app; ``executions`` (its runner) judges code answers.

    Code answers take at most half the node's sandbox workers at once (at least one), let in by turns
    between learners (:class:`~sandbox.fair.FairGate`, as contests judge), so a burst of quiz submissions
    never keeps executions and contest submissions from the pool, nor one learner the others.
    """

    def __init__(self, core_: Core, executions: Executions | None) -> None:
        self.core = core_
        self.settings = core_.settings
        self.executions = executions
        self._gate = FairGate(max(1, core_.settings.sandbox_workers // 2))

    # --- access --------------------------------------------------------------------------------

    async def _quiz(self, conn: Connection, user: Principal, quiz_id: uuid.UUID) -> tuple[Record, Record]:
        """A quiz and its course, for the course's staff and enrolled learners (403 for others who see
        the course, 404 for those who do not)."""
        quiz = await store.quiz(conn, quiz_id)
        if quiz is None:
            raise not_found("quiz")
        try:
            course = await visible_course(conn, user, quiz["course_id"])
        except AppError:
            raise not_found("quiz") from None
        await self._require_participant(conn, user, course)
        return quiz, course

    async def _require_participant(self, conn: Connection, user: Principal, course: Record) -> None:
        if not is_staff(course, user) and await enrollment_of(conn, user.id, course["id"]) is None:
            raise forbidden("only the course's owner, admins and enrolled learners may see its quizzes")

    async def _attempt(
        self, conn: Connection, user: Principal, attempt_id: uuid.UUID, *, lock: bool = False
    ) -> tuple[Record, Record, bool]:
        """An attempt, its quiz, and whether the caller is the course's staff: for its author and staff."""
        attempt = await store.attempt(conn, attempt_id, lock=lock)
        if attempt is None:
            raise not_found("attempt")
        quiz = await store.quiz(conn, attempt["quiz_id"])
        assert quiz is not None
        try:
            course = await visible_course(conn, user, quiz["course_id"])
        except AppError:
            raise not_found("attempt") from None
        staff = is_staff(course, user)
        if attempt["user_id"] != user.id and not staff:
            raise forbidden("only the attempt's author, the course owner or an admin may see it")
        return attempt, quiz, staff

    # --- writing quizzes -------------------------------------------------------------------------

    async def create(self, user: Principal, course_id: uuid.UUID, body: QuizIn) -> QuizKeyOut:
        core.check_limits(body, self.settings)
        for i, q in enumerate(body.questions):
            if q.kind == "code":
                self._check_language(i, q.language, q.tests)
        questions = [core.stored_question(q) for q in body.questions]
        fields = body.model_dump(exclude={"questions"})
        async with self.core.transaction() as tx:
            course = await owned_course(tx.conn, user, course_id)
            row = await store.insert_quiz(
                tx.conn, new_id(), course_id, fields, questions, core.max_points(questions), user.id
            )
            closes = row["closes_at"].isoformat() if row["closes_at"] else None
            payload = {"course_id": str(course_id), "course_title": course["title"], "quiz_id": str(row["id"]),
                       "title": row["title"], "closes_at": closes}  # fmt: skip
            await notify_learners(tx, course_id, "new_quiz", payload)
        return quiz_key_out(row)

    def _check_language(self, index: int, language: str, tests: list[TestCase]) -> None:
        if self.executions is None:
            return
        try:
            self.executions.runner.validate(JudgeRequest(language=language, source="", tests=tests))
        except (InvalidRequest, ValueError) as exc:
            raise invalid(f"questions.{index}: {str(exc).splitlines()[0]}", field=f"questions.{index}") from None

    async def update(self, user: Principal, quiz_id: uuid.UUID, body: QuizPatch) -> QuizOut:
        changes = {name: getattr(body, name) for name in body.model_fields_set}
        if not changes:
            raise invalid("nothing to change")
        for name in ("title", "description", "attempts_allowed", "results_visible"):
            if name in changes and changes[name] is None:
                raise invalid(f"{name} cannot be null", field=name)
        allowed = changes.get("attempts_allowed")
        if allowed is not None and allowed > self.settings.quiz_max_attempts_allowed:
            raise invalid(f"attempts_allowed may be at most {self.settings.quiz_max_attempts_allowed}")
        async with self.core.transaction() as tx:
            quiz = await store.quiz(tx.conn, quiz_id, lock=True)
            if quiz is None:
                raise not_found("quiz")
            try:
                await owned_course(tx.conn, user, quiz["course_id"])
            except AppError as exc:
                raise (not_found("quiz") if exc.code == ErrorCode.NOT_FOUND else exc) from None
            opens = changes.get("opens_at", quiz["opens_at"])
            closes = changes.get("closes_at", quiz["closes_at"])
            if opens is not None and closes is not None and closes <= opens:
                raise invalid("closes_at must be after opens_at", field="closes_at")
            row = await store.update_quiz(tx.conn, quiz_id, changes)
        return quiz_out(row)

    async def list_quizzes(self, user: Principal, course_id: uuid.UUID, query: PageQuery) -> Page[QuizOut]:
        at, ident = decode_cursor(query.cursor)
        async with self.core.pool.acquire() as conn:
            course = await visible_course(conn, user, course_id)
            await self._require_participant(conn, user, course)
            rows = await store.course_quizzes(conn, course_id, at, ident, query.limit + 1)
        return page_of(rows, query.limit, quiz_out)

    async def get(self, user: Principal, quiz_id: uuid.UUID) -> QuizOut:
        async with self.core.pool.acquire() as conn:
            quiz, _ = await self._quiz(conn, user, quiz_id)
        return quiz_out(quiz)

    async def key(self, user: Principal, quiz_id: uuid.UUID) -> QuizKeyOut:
        async with self.core.pool.acquire() as conn:
            quiz, course = await self._quiz(conn, user, quiz_id)
            if not is_staff(course, user):
                raise forbidden("only the course owner or an admin may see a quiz's answer key")
        return quiz_key_out(quiz)

    # --- taking a quiz ---------------------------------------------------------------------------

    async def start(self, user: Principal, quiz_id: uuid.UUID) -> tuple[AttemptOut, bool]:
        """The learner's attempt in progress if there is one, else a new one (``True``): 409 before the quiz
        opens, after it closes, or once every allowed attempt is used."""
        async with self.core.transaction() as tx:
            conn = tx.conn
            quiz, course = await self._quiz(conn, user, quiz_id)
            if await enrollment_of(conn, user.id, course["id"]) is None:
                raise forbidden("enroll in this course to take its quizzes")
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"quiz:{quiz_id}:{user.id}")
            now = await conn.fetchval("SELECT now()")
            mine = await store.attempts_of(conn, quiz_id, user.id)
            for attempt in mine:
                if attempt["submitted_at"] is None and not self._expired(attempt, quiz, now):
                    return attempt_out(attempt, quiz, False), False
            if quiz["opens_at"] is not None and now < quiz["opens_at"]:
                raise conflict(
                    f"this quiz opens at {quiz['opens_at'].isoformat()}", opens_at=quiz["opens_at"].isoformat()
                )
            if quiz["closes_at"] is not None and now >= quiz["closes_at"]:
                raise conflict(
                    f"this quiz closed at {quiz['closes_at'].isoformat()}", closes_at=quiz["closes_at"].isoformat()
                )
            if len(mine) >= quiz["attempts_allowed"]:
                raise conflict(
                    f"you have used all {quiz['attempts_allowed']} attempts at this quiz",
                    attempts_allowed=quiz["attempts_allowed"],
                )
            attempt = await store.insert_attempt(
                conn, new_id(), quiz_id, user.id, len(mine) + 1, core.new_seed(), quiz["time_limit_s"],
                quiz["closes_at"],
            )  # fmt: skip
        return attempt_out(attempt, quiz, False), True

    def _expired(self, attempt: Record, quiz: Record, now: datetime) -> bool:
        deadline = deadline_of(attempt, quiz)
        return deadline is not None and (now - deadline).total_seconds() > self.settings.quiz_deadline_grace_s

    async def save(
        self, user: Principal, attempt_id: uuid.UUID, answers: dict[str, Any], *, limited: bool = True
    ) -> AttemptOut:
        """Merge answers into an attempt in progress: 409 once submitted or past its deadline (:class:`TimeUp`),
        429 past ``quiz_save_rate_count`` saves in the window (unless not ``limited``: the submit's own)."""
        async with self.core.transaction() as tx:
            attempt, quiz, _ = await self._attempt(tx.conn, user, attempt_id, lock=True)
            if attempt["user_id"] != user.id:
                raise forbidden("only the attempt's author may answer it")
            if attempt["submitted_at"] is not None:
                raise AlreadySubmitted()
            if self._expired(attempt, quiz, await tx.conn.fetchval("SELECT now()")):
                raise TimeUp(deadline_of(attempt, quiz))
            window = self.settings.quiz_save_rate_window_s
            if limited and await store.save_count(tx.conn, attempt_id, window) >= self.settings.quiz_save_rate_count:
                raise AppError(
                    ErrorCode.RATE_LIMITED,
                    f"answers of one attempt may be saved {self.settings.quiz_save_rate_count} times per "
                    f"{window:g} s; wait a little",
                    {"retry_after_s": max(1, math.ceil(window))},
                )
            core.check_answers(quiz["questions"], answers, self.settings)
            row, _ = await store.save_answers(tx.conn, attempt_id, answers, window)
        return attempt_out(row, quiz, False)

    async def submit(self, user: Principal, attempt_id: uuid.UUID, answers: dict[str, Any] | None) -> AttemptOut:
        """Grade the attempt (once: submitting again answers the graded attempt). Past the deadline the
        answers sent along are ignored and the saved ones graded."""
        async with self.core.pool.acquire() as conn:
            attempt, quiz, staff = await self._attempt(conn, user, attempt_id)
            if attempt["user_id"] != user.id:
                raise forbidden("only the attempt's author may submit it")
            if attempt["submitted_at"] is not None:
                return attempt_out(attempt, quiz, staff)
            late = self._expired(attempt, quiz, await conn.fetchval("SELECT now()"))
        if answers and not late:
            try:
                await self.save(user, attempt_id, answers, limited=False)
            except TimeUp:
                late = True  # the deadline passed meanwhile: graded with what was saved by then
            except AlreadySubmitted:
                pass  # a concurrent submit graded it first: answered below with its grade
        graded = await self._grade(attempt_id, "deadline" if late else "learner")
        return attempt_out(graded, quiz, staff)

    async def _grade(self, attempt_id: uuid.UUID, finished_by: str) -> Record:
        """Judge the saved code answers, then grade and store, unless the answers changed meanwhile (then
        again) or someone else graded it first (theirs stands)."""
        for _ in range(5):
            attempt = await store.attempt(self.core.pool, attempt_id)
            assert attempt is not None
            if attempt["submitted_at"] is not None:
                return attempt
            quiz = await store.quiz(self.core.pool, attempt["quiz_id"])
            assert quiz is not None
            outcomes = await self._judge(quiz["questions"], attempt["answers"], attempt["user_id"])
            results = [core.grade(q, attempt["answers"].get(q["id"]), outcomes.get(q["id"])) for q in quiz["questions"]]
            score = sum(r.points for r in results)
            async with self.core.transaction() as tx:
                now = await store.attempt(tx.conn, attempt_id, lock=True)
                assert now is not None
                if now["submitted_at"] is not None:
                    return now
                if now["answers"] != attempt["answers"]:
                    continue
                return await store.record_grade(
                    tx.conn, attempt_id, finished_by, score, [r.model_dump(mode="json") for r in results]
                )
        raise conflict("the answers keep changing while being graded; try again")

    async def _judge(
        self, questions: list[Question], answers: dict[str, Any], user_id: uuid.UUID
    ) -> dict[str, CodeOutcome]:
        """The judge's outcome for each answered code question."""
        todo = [q for q in questions if q["kind"] == "code" and core.is_answered(q, answers.get(q["id"]))]
        if not todo:
            return {}
        runner = self.executions.runner if self.executions is not None else None
        if runner is None or runner.unavailable is not None:
            why = "not started" if runner is None else runner.unavailable
            raise AppError(
                ErrorCode.UNAVAILABLE, f"code answers cannot be judged now ({why}); submit again later",
                {"retry_after_s": 60},
            )  # fmt: skip
        # One after another: a quiz of many code questions takes one place in the runner's queue at a time,
        # leaving the rest of the pool (shared with executions and contests) to everyone else.
        return {q["id"]: await self._judge_one(runner, q, answers[q["id"]], user_id) for q in todo}

    async def _judge_one(self, runner: Any, q: Question, source: str, user_id: uuid.UUID) -> CodeOutcome:
        tests = [TestCase(**t) for t in q["key"]["tests"]]
        try:
            request = JudgeRequest(language=q["language"], source=source, tests=tests)
            runner.validate(request)
        except (InvalidRequest, ValueError) as exc:
            log.info("a quiz code answer cannot be judged: %s", exc)
            return CodeOutcome("invalid", 0, len(tests))
        context = {"user_id": str(user_id), "quiz_question": q["id"]}
        async with self._gate.place(context["user_id"]):
            for attempt in range(1200):
                try:
                    result = await (await runner.submit(request, context)).result
                    return CodeOutcome(str(result.verdict), result.passed, result.total)
                except QueueFull:
                    await asyncio.sleep(min(0.5, 0.02 * (attempt + 1)))  # the pool is shared with executions
                except SandboxUnavailable as exc:
                    raise AppError(ErrorCode.UNAVAILABLE, f"code answers cannot be judged now: {exc}",
                                   {"retry_after_s": 60}) from None  # fmt: skip
        raise AppError(ErrorCode.UNAVAILABLE, "the judge is too busy; submit again later", {"retry_after_s": 10})

    async def settle(self, **where: uuid.UUID | None) -> None:
        """Grade attempts left past their deadline (``quiz_id``, ``course_id`` or ``user_id``), with the answers
        saved by then; ones with code answers stay for later while the judge is unavailable."""
        async with self.core.pool.acquire() as conn:
            expired = await store.expired_attempts(conn, self.settings.quiz_deadline_grace_s, **where)
        for attempt_id in expired:
            try:
                await self._grade(attempt_id, "deadline")
            except AppError as exc:
                log.info("attempt %s past its deadline stays ungraded for now: %s", attempt_id, exc.message)

    # --- reading attempts ------------------------------------------------------------------------

    # Reads settle expired attempts first, holding no connection meanwhile (grading takes its own, and
    # judging may take a while): a request never holds one connection while waiting for another.

    async def attempt(self, user: Principal, attempt_id: uuid.UUID) -> AttemptOut:
        async with self.core.pool.acquire() as conn:
            attempt, quiz, staff = await self._attempt(conn, user, attempt_id)
            expired = attempt["submitted_at"] is None and self._expired(
                attempt, quiz, await conn.fetchval("SELECT now()")
            )
        if not expired:
            return attempt_out(attempt, quiz, staff)
        await self.settle(quiz_id=quiz["id"], user_id=attempt["user_id"])
        async with self.core.pool.acquire() as conn:
            attempt, quiz, staff = await self._attempt(conn, user, attempt_id)
        return attempt_out(attempt, quiz, staff)

    async def attempts(self, user: Principal, quiz_id: uuid.UUID, query: PageQuery) -> Page[AttemptOut]:
        """Everyone's attempts for the course's staff, the caller's own otherwise; oldest first."""
        at, ident = decode_cursor(query.cursor)
        async with self.core.pool.acquire() as conn:
            quiz, course = await self._quiz(conn, user, quiz_id)
            staff = is_staff(course, user)
            only = None if staff else user.id
        await self.settle(quiz_id=quiz_id, user_id=only)
        async with self.core.pool.acquire() as conn:
            rows = await store.attempts_page(conn, quiz_id, only, at, ident, query.limit + 1)
        return page_of(rows, query.limit, lambda r: attempt_out(r, quiz, staff), time_key="started_at")

    # --- staff views ------------------------------------------------------------------------------

    async def stats(self, user: Principal, quiz_id: uuid.UUID) -> QuizStatsOut:
        async with self.core.pool.acquire() as conn:
            quiz, course = await self._quiz(conn, user, quiz_id)
            if not is_staff(course, user):
                raise forbidden("only the course owner or an admin may see a quiz's statistics")
        await self.settle(quiz_id=quiz_id)
        async with self.core.pool.acquire() as conn:
            counted = [q["id"] for q in quiz["questions"] if q["kind"] in ("single", "multiple", "true_false")]
            rows = await store.submitted(conn, quiz_id, counted)
        attempts = [(r["answers"], r["results"]) for r in rows]
        return QuizStatsOut(
            quiz_id=quiz_id, attempts=len(rows), learners=len({r["user_id"] for r in rows}),
            questions=core.question_stats(quiz["questions"], attempts),
        )  # fmt: skip

    async def gradebook(self, user: Principal, course_id: uuid.UUID) -> GradebookOut:
        """Every enrolled learner × every assignment and quiz: a quiz's best submitted attempt, an
        assignment's latest graded submission."""
        async with self.core.pool.acquire() as conn:
            await owned_course(conn, user, course_id)
        await self.settle(course_id=course_id)
        async with self.core.pool.acquire() as conn:
            columns, learners, scores = await store.gradebook_rows(conn, course_id)
        place = {c["id"]: i for i, c in enumerate(columns)}
        by_user: dict[uuid.UUID, list[float | None]] = {r["id"]: [None] * len(columns) for r in learners}
        for s in scores:
            row = by_user.get(s["user_id"])
            if row is not None and s["item_id"] in place:
                row[place[s["item_id"]]] = float(s["score"])
        rows = [
            GradeRow(
                user_id=r["id"],
                display_name=r["display_name"],
                email=r["email"],
                scores=by_user[r["id"]],
                total=sum(v for v in by_user[r["id"]] if v is not None),
            )
            for r in learners
        ]
        return GradebookOut(
            course_id=course_id,
            columns=[
                GradeColumn(kind=c["kind"], id=c["id"], title=c["title"], max_points=c["max_points"]) for c in columns
            ],
            rows=rows,
            max_total=sum(c["max_points"] for c in columns),
        )


GRADING = web.AppKey("grading", Grading)


async def run_grading(app: web.Application) -> AsyncIterator[None]:
    """The app's :class:`Grading` (a ``cleanup_ctx`` after the sandbox's, whose runner it judges with)."""
    app[GRADING] = Grading(app[CORE], app.get(EXECUTIONS))
    yield
