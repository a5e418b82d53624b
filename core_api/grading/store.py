"""SQL of quizzes, attempts and the gradebook."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from core_api.db import Connection, Record
from core_api.grading.core import Question

QUIZ_COLUMNS = """id, course_id, title, description, time_limit_s, attempts_allowed, opens_at, closes_at,
    shuffle_questions, shuffle_options, results_visible, questions, max_points, created_at"""
ATTEMPT_COLUMNS = """id, quiz_id, user_id, number, seed, started_at, deadline_at, answers, saved_at, submitted_at,
    finished_by, score, results"""


async def insert_quiz(
    conn: Connection, quiz_id: uuid.UUID, course_id: uuid.UUID, fields: dict[str, Any], questions: list[Question],
    points: float, author: uuid.UUID,
) -> Record:  # fmt: skip
    row = await conn.fetchrow(
        f"""INSERT INTO quizzes (id, course_id, title, description, time_limit_s, attempts_allowed, opens_at,
                closes_at, shuffle_questions, shuffle_options, results_visible, questions, max_points, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING {QUIZ_COLUMNS}""",
        quiz_id, course_id, fields["title"], fields["description"], fields["time_limit_s"],
        fields["attempts_allowed"], fields["opens_at"], fields["closes_at"], fields["shuffle_questions"],
        fields["shuffle_options"], fields["results_visible"], questions, points, author,
    )  # fmt: skip
    assert row is not None
    return row


async def quiz(conn: Connection, quiz_id: uuid.UUID, *, lock: bool = False) -> Record | None:
    row: Record | None = await conn.fetchrow(
        f"SELECT {QUIZ_COLUMNS} FROM quizzes WHERE id = $1" + (" FOR UPDATE" if lock else ""), quiz_id
    )
    return row


async def course_quizzes(
    conn: Connection, course_id: uuid.UUID, after: datetime | None, after_id: uuid.UUID | None, limit: int
) -> list[Record]:
    rows: list[Record] = await conn.fetch(
        f"""SELECT {QUIZ_COLUMNS} FROM quizzes
            WHERE course_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
            ORDER BY created_at, id LIMIT $4""",
        course_id, after, after_id, limit,
    )  # fmt: skip
    return rows


async def update_quiz(conn: Connection, quiz_id: uuid.UUID, changes: dict[str, Any]) -> Record:
    names = list(changes)
    sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
    row = await conn.fetchrow(
        f"UPDATE quizzes SET {sets} WHERE id = $1 RETURNING {QUIZ_COLUMNS}", quiz_id, *(changes[n] for n in names)
    )
    assert row is not None
    return row


# --- attempts ------------------------------------------------------------------------------------


async def attempt(conn: Connection, attempt_id: uuid.UUID, *, lock: bool = False) -> Record | None:
    row: Record | None = await conn.fetchrow(
        f"SELECT {ATTEMPT_COLUMNS} FROM quiz_attempts WHERE id = $1" + (" FOR UPDATE" if lock else ""), attempt_id
    )
    return row


async def attempts_of(conn: Connection, quiz_id: uuid.UUID, user_id: uuid.UUID) -> list[Record]:
    rows: list[Record] = await conn.fetch(
        f"SELECT {ATTEMPT_COLUMNS} FROM quiz_attempts WHERE quiz_id = $1 AND user_id = $2 ORDER BY number",
        quiz_id, user_id,
    )  # fmt: skip
    return rows


async def attempts_page(
    conn: Connection, quiz_id: uuid.UUID, user_id: uuid.UUID | None, after: datetime | None,
    after_id: uuid.UUID | None, limit: int,
) -> list[Record]:  # fmt: skip
    """A quiz's attempts, oldest first: everyone's (``user_id`` None) or one learner's."""
    rows: list[Record] = await conn.fetch(
        f"""SELECT {ATTEMPT_COLUMNS} FROM quiz_attempts
            WHERE quiz_id = $1 AND ($2::uuid IS NULL OR user_id = $2)
              AND ($3::timestamptz IS NULL OR (started_at, id) > ($3, $4))
            ORDER BY started_at, id LIMIT $5""",
        quiz_id, user_id, after, after_id, limit,
    )  # fmt: skip
    return rows


async def insert_attempt(
    conn: Connection, attempt_id: uuid.UUID, quiz_id: uuid.UUID, user_id: uuid.UUID, number: int, seed: int,
    time_limit_s: int | None, closes_at: datetime | None,
) -> Record:  # fmt: skip
    """A new attempt; its deadline is the earlier of the time limit and the quiz's close (database clock)."""
    row = await conn.fetchrow(
        f"""INSERT INTO quiz_attempts (id, quiz_id, user_id, number, seed, deadline_at)
            VALUES ($1, $2, $3, $4, $5, (SELECT min(t) FROM (VALUES
                (now() + make_interval(secs => $6::integer)), ($7::timestamptz)) AS d (t)))
            RETURNING {ATTEMPT_COLUMNS}""",
        attempt_id, quiz_id, user_id, number, seed, time_limit_s, closes_at,
    )  # fmt: skip
    assert row is not None
    return row


async def save_answers(
    conn: Connection, attempt_id: uuid.UUID, answers: dict[str, Any], window_s: float
) -> tuple[Record, int]:
    """Merge ``answers`` (a null one removes that answer) and count the save in the rate window; the
    attempt and the saves made in the current window, this one included."""
    set_ = {k: v for k, v in answers.items() if v is not None}
    cleared = [k for k, v in answers.items() if v is None]
    row = await conn.fetchrow(
        f"""UPDATE quiz_attempts SET answers = (answers - $3::text[]) || $2::jsonb, saved_at = now(),
                save_count = CASE WHEN save_window_at > now() - make_interval(secs => $4) THEN save_count + 1
                                  ELSE 1 END,
                save_window_at = CASE WHEN save_window_at > now() - make_interval(secs => $4) THEN save_window_at
                                      ELSE now() END
            WHERE id = $1 RETURNING {ATTEMPT_COLUMNS}, save_count""",
        attempt_id, set_, cleared, window_s,
    )  # fmt: skip
    assert row is not None
    return row, row["save_count"]


async def save_count(conn: Connection, attempt_id: uuid.UUID, window_s: float) -> int:
    """Saves made in the attempt's current rate window (0 once it has passed)."""
    count: int = await conn.fetchval(
        """SELECT CASE WHEN save_window_at > now() - make_interval(secs => $2) THEN save_count ELSE 0 END
           FROM quiz_attempts WHERE id = $1""",
        attempt_id, window_s,
    )  # fmt: skip
    return count


async def record_grade(
    conn: Connection, attempt_id: uuid.UUID, finished_by: str, score: float, results: list[dict[str, Any]]
) -> Record:
    row = await conn.fetchrow(
        f"""UPDATE quiz_attempts SET submitted_at = now(), finished_by = $2, score = $3, results = $4
            WHERE id = $1 RETURNING {ATTEMPT_COLUMNS}""",
        attempt_id, finished_by, score, results,
    )  # fmt: skip
    assert row is not None
    return row


async def expired_attempts(
    conn: Connection, grace_s: float, *, quiz_id: uuid.UUID | None = None, course_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:  # fmt: skip
    """Unsubmitted attempts whose deadline (their own, or the quiz's close if earlier) and grace have passed,
    of one quiz, a course's quizzes, or one learner's."""
    rows = await conn.fetch(
        """SELECT a.id FROM quiz_attempts a JOIN quizzes q ON q.id = a.quiz_id
           WHERE a.submitted_at IS NULL AND least(a.deadline_at, q.closes_at) + make_interval(secs => $1) < now()
             AND ($2::uuid IS NULL OR a.quiz_id = $2) AND ($3::uuid IS NULL OR q.course_id = $3)
             AND ($4::uuid IS NULL OR a.user_id = $4)
           ORDER BY a.started_at LIMIT 1000""",
        grace_s, quiz_id, course_id, user_id,
    )  # fmt: skip
    return [r["id"] for r in rows]


async def submitted(conn: Connection, quiz_id: uuid.UUID, answers_of: list[str]) -> list[Record]:
    """A quiz's submitted attempts: who, the results, and only the answers to the questions ``answers_of``
    (the choice questions, whose options are counted: code answers would only weigh on memory)."""
    rows: list[Record] = await conn.fetch(
        """SELECT user_id, results, (SELECT coalesce(jsonb_object_agg(key, value), '{}'::jsonb)
                                     FROM jsonb_each(answers) WHERE key = ANY($2::text[])) AS answers
           FROM quiz_attempts WHERE quiz_id = $1 AND submitted_at IS NOT NULL""",
        quiz_id, answers_of,
    )  # fmt: skip
    return rows


# --- the gradebook -------------------------------------------------------------------------------


async def gradebook_rows(conn: Connection, course_id: uuid.UUID) -> tuple[list[Record], list[Record], list[Record]]:
    """The course's columns (assignments and quizzes, oldest first), enrolled learners, and scores:
    a quiz's best submitted attempt, an assignment's latest graded submission."""
    columns = await conn.fetch(
        """SELECT 'assignment' AS kind, id, title, max_points, created_at FROM assignments WHERE course_id = $1
           UNION ALL
           SELECT 'quiz', id, title, max_points, created_at FROM quizzes WHERE course_id = $1
           ORDER BY created_at, id""",
        course_id,
    )
    learners = await conn.fetch(
        """SELECT u.id, u.display_name, u.email FROM enrollments e JOIN users u ON u.id = e.user_id
           WHERE e.course_id = $1 ORDER BY u.display_name, u.id""",
        course_id,
    )
    scores = await conn.fetch(
        """SELECT item_id, user_id, score FROM (
               SELECT DISTINCT ON (s.assignment_id, s.user_id) s.assignment_id AS item_id, s.user_id,
                      s.grade AS score
               FROM submissions s JOIN assignments a ON a.id = s.assignment_id
               WHERE a.course_id = $1 AND s.grade IS NOT NULL
               ORDER BY s.assignment_id, s.user_id, s.submitted_at DESC, s.id DESC) graded
           UNION ALL
           SELECT a.quiz_id, a.user_id, max(a.score) FROM quiz_attempts a JOIN quizzes q ON q.id = a.quiz_id
           WHERE q.course_id = $1 AND a.submitted_at IS NOT NULL GROUP BY a.quiz_id, a.user_id""",
        course_id,
    )
    return columns, learners, scores
