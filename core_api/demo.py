"""Demo data for ``studyhall serve --demo``: accounts of every role, a published course with a quiz, a community.

Loading is idempotent: rows have fixed ids or natural keys and are inserted only when missing, under
an advisory lock so two nodes starting with ``--demo`` at once do not race. Existing accounts are left
as they are (their passwords are not reset).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from core_api.auth import Passwords
from core_api.db import Connection
from core_api.grading.core import max_points, stored_question
from core_api.grading.schemas import QuizIn

DEMO_LOCK_ID = 0x5348_4445_4D4F  # "SHDEMO"
_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://studyhall.invalid/demo")


def demo_id(name: str) -> uuid.UUID:
    """The fixed id of a demo row, the same in every database."""
    return uuid.uuid5(_NS, name)


@dataclass(frozen=True)
class DemoAccount:
    key: str
    email: str
    password: str
    display_name: str
    role: str


ACCOUNTS = (
    DemoAccount("admin", "demo-admin@example.com", "demo-admin-pass", "Ada Admin", "admin"),
    DemoAccount("instructor", "demo-instructor@example.com", "demo-instructor-pass", "Ivan Instructor", "instructor"),
    DemoAccount("student1", "demo-student1@example.com", "demo-student-pass", "Sam Student", "student"),
    DemoAccount("student2", "demo-student2@example.com", "demo-student-pass", "Sasha Student", "student"),
)

COURSE_TITLE = "Open Movies, Together"
COMMUNITY_NAME = "Demo Study Group"
# Public sample videos (Blender Foundation open movies, hosted by Google for testing players).
_SAMPLES = "https://commondatastorage.googleapis.com/gtv-videos-bucket/sample/"
LECTURES = (
    ("Big Buck Bunny", _SAMPLES + "BigBuckBunny.mp4", 596.5),
    ("Elephants Dream", _SAMPLES + "ElephantsDream.mp4", 653.8),
    ("Sintel", _SAMPLES + "Sintel.mp4", 888.0),
)

DEMO_QUIZ = QuizIn.model_validate(
    {
        "title": "Open movies: a warm-up quiz",
        "attempts_allowed": 3,
        "time_limit_s": 600,
        "shuffle_options": True,
        "questions": [
            {"kind": "true_false", "prompt": "Big Buck Bunny is a rabbit.", "answer": True},
            {
                "kind": "single",
                "prompt": "Who made these open movies?",
                "options": [
                    {"text": "The Blender Foundation", "correct": True},
                    {"text": "A film school"},
                    {"text": "Nobody knows"},
                ],
            },
            {"kind": "short", "prompt": "Name the girl looking for her dragon.", "accepted": ["Sintel"]},
            {"kind": "numeric", "prompt": "How many open movies does this course show?", "answer": 3},
        ],
    }
)


@dataclass(frozen=True)
class DemoData:
    accounts: tuple[DemoAccount, ...]
    user_ids: dict[str, uuid.UUID]
    course_id: uuid.UUID
    community_id: uuid.UUID
    created: bool  # False when everything was already there


async def load_demo(conn: Connection, passwords: Passwords) -> DemoData:
    """Insert whatever part of the demo data is missing; return where it lives."""
    created = False
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", DEMO_LOCK_ID)
        ids: dict[str, uuid.UUID] = {}
        for acc in ACCOUNTS:
            found = await conn.fetchval("SELECT id FROM users WHERE lower(email) = lower($1)", acc.email)
            if found is None:
                found = demo_id("user:" + acc.key)
                await conn.execute(
                    "INSERT INTO users (id, email, display_name, password_hash, role) VALUES ($1, $2, $3, $4, $5)",
                    found,
                    acc.email,
                    acc.display_name,
                    await passwords.hash(acc.password),
                    acc.role,
                )
                created = True
            ids[acc.key] = found
        students = [ids["student1"], ids["student2"]]

        course_id = demo_id("course")
        status = await conn.execute(
            "INSERT INTO courses (id, owner_id, title, description, status, published_at)"
            " VALUES ($1, $2, $3, $4, 'published', now()) ON CONFLICT (id) DO NOTHING",
            course_id,
            ids["instructor"],
            COURSE_TITLE,
            "Watch three open movies in sync with your study group, and talk about them.",
        )
        created |= status.endswith(" 1")
        for position, (title, url, duration) in enumerate(LECTURES):
            await conn.execute(
                "INSERT INTO lectures (id, course_id, position, title, media_kind, media_url, duration_s)"
                " VALUES ($1, $2, $3, $4, 'video', $5, $6) ON CONFLICT (id) DO NOTHING",
                demo_id(f"lecture:{position}"),
                course_id,
                position,
                title,
                url,
                duration,
            )
        for student in students:
            await conn.execute(
                "INSERT INTO enrollments (id, user_id, course_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                demo_id(f"enrollment:{student}"),
                student,
                course_id,
            )

        questions = [stored_question(q) for q in DEMO_QUIZ.questions]
        await conn.execute(
            "INSERT INTO quizzes (id, course_id, title, time_limit_s, attempts_allowed, shuffle_options, questions,"
            " max_points, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            demo_id("quiz"),
            course_id,
            DEMO_QUIZ.title,
            DEMO_QUIZ.time_limit_s,
            DEMO_QUIZ.attempts_allowed,
            DEMO_QUIZ.shuffle_options,
            questions,
            max_points(questions),
            ids["instructor"],
        )

        await conn.execute(
            "INSERT INTO communities (id, name, description, visibility, created_by)"
            " VALUES ($1, $2, $3, 'public', $4) ON CONFLICT DO NOTHING",
            demo_id("community"),
            COMMUNITY_NAME,
            "Everyone taking the demo course: chat, watch parties and weekly group wars.",
            ids["instructor"],
        )
        community_id = await conn.fetchval("SELECT id FROM communities WHERE lower(name) = lower($1)", COMMUNITY_NAME)
        members = [(ids["instructor"], "owner"), (ids["admin"], "admin"), *[(s, "member") for s in students]]
        for user_id, role in members:
            await conn.execute(
                "INSERT INTO community_members (community_id, user_id, role) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                community_id,
                user_id,
                role,
            )
    return DemoData(ACCOUNTS, ids, course_id, community_id, created)
