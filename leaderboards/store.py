"""Contests in Postgres: the SQL, and rows turned into scoring's attempts and the API's answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from core_api.db import Connection, Pool, Record
from leaderboards.core import Attempt, Rules
from leaderboards.schemas import CommunityRef, ProblemOut, Sample, SubmissionOut

CONTEST_COLUMNS = (
    "id, title, description, organizer_id, created_by, starts_at, ends_at, freeze_at, scoring, penalty_minutes,"
    " finalised_at, created_at"
)
SUBMISSION_COLUMNS = (
    "s.id, s.contest_id, s.problem_id, s.user_id, s.community_id, s.language, s.submitted_at, s.verdict, s.passed,"
    " s.total, s.judged_at, s.disqualified"
)


def minute_of(contest: Record, at: datetime) -> int:
    return max(0, int((at - contest["starts_at"]).total_seconds() // 60))


async def contest_row(conn: Connection | Pool, contest_id: uuid.UUID) -> Record | None:
    row: Record | None = await conn.fetchrow(f"SELECT {CONTEST_COLUMNS} FROM contests WHERE id = $1", contest_id)
    return row


async def communities_of(conn: Connection | Pool, contest_id: uuid.UUID) -> list[CommunityRef]:
    rows = await conn.fetch(
        "SELECT c.id, c.name FROM contest_communities cc JOIN communities c ON c.id = cc.community_id"
        " WHERE cc.contest_id = $1 ORDER BY c.name, c.id",
        contest_id,
    )
    return [CommunityRef(id=r["id"], name=r["name"]) for r in rows]


async def problems_of(conn: Connection | Pool, contest_id: uuid.UUID) -> list[Record]:
    return list(
        await conn.fetch(
            "SELECT id, contest_id, ordinal, label, title, statement, samples, tests, cpu_ms, memory_kb, points"
            " FROM contest_problems WHERE contest_id = $1 ORDER BY ordinal",
            contest_id,
        )
    )


def problem_out(row: Record) -> ProblemOut:
    return ProblemOut(
        id=row["id"],
        label=row["label"],
        title=row["title"],
        statement=row["statement"],
        samples=[Sample(**s) for s in row["samples"]],
        cpu_ms=row["cpu_ms"],
        memory_kb=row["memory_kb"],
        points=row["points"],
        test_count=len(row["tests"]),
    )


def submission_out(row: Record, contest: Record) -> SubmissionOut:
    return SubmissionOut(
        id=row["id"],
        contest_id=row["contest_id"],
        problem_id=row["problem_id"],
        user_id=row["user_id"],
        community_id=row["community_id"],
        language=row["language"],
        submitted_at=row["submitted_at"],
        minute=minute_of(contest, row["submitted_at"]),
        verdict=row["verdict"],
        passed=row["passed"],
        total=row["total"],
        judged_at=row["judged_at"],
        disqualified=row["disqualified"],
    )


def rules_of(contest: Record, problems: list[Record]) -> Rules:
    return Rules(
        scoring=contest["scoring"],
        penalty_minutes=contest["penalty_minutes"],
        points={str(p["id"]): p["points"] for p in problems},
        freeze_at=contest["freeze_at"],
        finalised=contest["finalised_at"] is not None,
    )


async def attempts_of(conn: Connection | Pool, contest: Record) -> tuple[list[Attempt], dict[str, str]]:
    """Every counted (not disqualified) attempt of the contest, and the display names of their authors."""
    rows = await conn.fetch(
        "SELECT s.id, s.problem_id, s.user_id, s.community_id, s.submitted_at, s.verdict, u.display_name"
        " FROM contest_submissions s JOIN users u ON u.id = s.user_id"
        " WHERE s.contest_id = $1 AND NOT s.disqualified",
        contest["id"],
    )
    attempts = [
        Attempt(
            id=str(r["id"]),
            problem_id=str(r["problem_id"]),
            user_id=str(r["user_id"]),
            community_id=str(r["community_id"]),
            submitted_at=r["submitted_at"],
            minute=minute_of(contest, r["submitted_at"]),
            verdict=r["verdict"],
        )
        for r in rows
    ]
    return attempts, {str(r["user_id"]): r["display_name"] for r in rows}


async def record_verdict(pool: Pool, submission_id: uuid.UUID, verdict: str, passed: int, total: int) -> Any:
    return await pool.fetchval(
        "UPDATE contest_submissions SET verdict = $2, passed = $3, total = $4, judged_at = now()"
        " WHERE id = $1 RETURNING contest_id",
        submission_id,
        verdict,
        passed,
        total,
    )
