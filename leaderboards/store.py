"""Contests in Postgres: the SQL, and rows turned into scoring's attempts and the API's answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from core_api.db import Connection, Pool, Record
from core_api.executions import STALE_AFTER_MIN
from leaderboards.core import Attempt, Rules
from leaderboards.schemas import CommunityRef, ProblemOut, Sample, SubmissionOut

CONTEST_COLUMNS = (
    "id, title, description, organizer_id, created_by, starts_at, ends_at, freeze_at, scoring, penalty_minutes,"
    " finalised_at, created_at, prizes, approval, approval_note, approved_by, approval_decided_at, awarded_at,"
    " award_note, template_id"
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
    """The communities taking part: those whose admins accepted (only their names are ever shown)."""
    rows = await conn.fetch(
        "SELECT c.id, c.name FROM contest_communities cc JOIN communities c ON c.id = cc.community_id"
        " WHERE cc.contest_id = $1 AND cc.state = 'accepted' ORDER BY c.name, c.id",
        contest_id,
    )
    return [CommunityRef(id=r["id"], name=r["name"]) for r in rows]


async def contest_state(
    conn: Connection | Pool, contest_id: uuid.UUID
) -> tuple[int, Record, Rules, dict[str, str]] | None:
    """In one statement: the oldest transaction still running (``pg_snapshot_xmin``, where the next read of
    changed submissions starts: :func:`attempts_changed`), the contest, its scoring rules and the communities
    taking part (id to name); ``None`` if there is no such contest."""
    row = await conn.fetchrow(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon,"
        " ARRAY(SELECT p.id::text FROM contest_problems p WHERE p.contest_id = $1 ORDER BY p.ordinal) AS problem_ids,"
        " ARRAY(SELECT p.points FROM contest_problems p WHERE p.contest_id = $1 ORDER BY p.ordinal) AS points,"
        " ARRAY(SELECT cc.community_id::text FROM contest_communities cc WHERE cc.contest_id = $1"
        "  AND cc.state = 'accepted' ORDER BY cc.community_id) AS community_ids,"
        " ARRAY(SELECT m.name FROM contest_communities cc JOIN communities m ON m.id = cc.community_id"
        "  WHERE cc.contest_id = $1 AND cc.state = 'accepted' ORDER BY cc.community_id) AS community_names,"
        f" {', '.join('c.' + c.strip() for c in CONTEST_COLUMNS.split(','))}"
        " FROM contests c WHERE c.id = $1",
        contest_id,
    )
    if row is None:
        return None
    rules = Rules(
        scoring=row["scoring"],
        penalty_minutes=row["penalty_minutes"],
        points=dict(zip(row["problem_ids"], row["points"], strict=True)),
        freeze_at=row["freeze_at"],
        finalised=row["finalised_at"] is not None,
    )
    return row["horizon"], row, rules, dict(zip(row["community_ids"], row["community_names"], strict=True))


async def submissions_in_flight(conn: Connection, user_id: uuid.UUID) -> int:
    """The user's submissions waiting for the judge (for ``STUDYHALL_SANDBOX_PER_USER``, with executions);
    one left by a stopped node stops counting after as long as an execution would."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM contest_submissions WHERE user_id = $1 AND verdict IS NULL AND NOT disqualified"
        f" AND received_at > now() - interval '{STALE_AFTER_MIN} minutes'",
        user_id,
    )
    return count


async def submissions_since(conn: Connection, user_id: uuid.UUID, window_s: float) -> tuple[int, float]:
    """How many submissions the user made in the last ``window_s`` seconds (all contests), and the seconds
    until the oldest of them leaves the window."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM min(received_at) + make_interval(secs => $2) - now()) AS wait"
        " FROM contest_submissions WHERE user_id = $1 AND received_at > now() - make_interval(secs => $2)",
        user_id,
        window_s,
    )
    assert row is not None
    return int(row["n"]), float(row["wait"] or 0)


async def user_names(conn: Connection | Pool, ids: list[str]) -> dict[str, str]:
    rows = await conn.fetch("SELECT id, display_name FROM users WHERE id = ANY($1::uuid[])", ids)
    return {str(r["id"]): r["display_name"] for r in rows}


async def accepted_names(conn: Connection | Pool, contest_id: uuid.UUID, ids: list[str]) -> dict[str, str]:
    """Names of the communities among ``ids`` that accepted to take part in the contest."""
    rows = await conn.fetch(
        "SELECT c.id, c.name FROM contest_communities cc JOIN communities c ON c.id = cc.community_id"
        " WHERE cc.contest_id = $1 AND cc.state = 'accepted' AND c.id = ANY($2::uuid[])",
        contest_id,
        ids,
    )
    return {str(r["id"]): r["name"] for r in rows}


async def shown_community_names(
    conn: Connection | Pool, user_id: uuid.UUID, is_admin: bool, ids: list[str]
) -> dict[str, str]:
    """Names of the communities among ``ids`` the caller may see, or that accepted to take part in a contest."""
    rows = await conn.fetch(
        "SELECT c.id, c.name FROM communities c WHERE c.id = ANY($1::uuid[]) AND ($3 OR c.visibility = 'public'"
        " OR EXISTS (SELECT 1 FROM community_members m WHERE m.community_id = c.id AND m.user_id = $2)"
        " OR EXISTS (SELECT 1 FROM contest_communities cc WHERE cc.community_id = c.id AND cc.state = 'accepted'))",
        ids,
        user_id,
        is_admin,
    )
    return {str(r["id"]): r["name"] for r in rows}


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


def _attempt(contest: Record, r: Record) -> Attempt:
    return Attempt(
        id=str(r["id"]),
        problem_id=str(r["problem_id"]),
        user_id=str(r["user_id"]),
        community_id=str(r["community_id"]),
        submitted_at=r["submitted_at"],
        minute=minute_of(contest, r["submitted_at"]),
        verdict=r["verdict"],
    )


async def attempts_of(conn: Connection | Pool, contest: Record) -> tuple[list[Attempt], dict[str, str]]:
    """Every counted (not disqualified) attempt of the contest, and the display names of their authors."""
    rows = await conn.fetch(
        "SELECT s.id, s.problem_id, s.user_id, s.community_id, s.submitted_at, s.verdict, u.display_name"
        " FROM contest_submissions s JOIN users u ON u.id = s.user_id"
        " WHERE s.contest_id = $1 AND NOT s.disqualified",
        contest["id"],
    )
    return [_attempt(contest, r) for r in rows], {str(r["user_id"]): r["display_name"] for r in rows}


async def attempts_changed(
    conn: Connection | Pool, contest: Record, since_xid: int
) -> tuple[list[Attempt], list[str], dict[str, str]]:
    """The contest's submissions written (or deleted) by transactions from ``since_xid`` on (migration
    0018), in one statement: counted attempts as they are now, ids of the disqualified and deleted ones,
    and the display names of the authors. ``since_xid`` is the horizon of :func:`contest_state` read
    before the previous call: every transaction not yet visible then has an id at least that."""
    rows = await conn.fetch(
        "SELECT s.id, s.problem_id, s.user_id, s.community_id, s.submitted_at, s.verdict, s.disqualified,"
        " u.display_name FROM contest_submissions s JOIN users u ON u.id = s.user_id"
        " WHERE s.contest_id = $1 AND s.changed_xid >= $2"
        " UNION ALL SELECT t.submission_id, NULL, NULL, NULL, NULL, NULL, true, NULL"
        " FROM contest_submission_tombstones t WHERE t.contest_id = $1 AND t.changed_xid >= $2",
        contest["id"],
        since_xid,
    )
    changed = [_attempt(contest, r) for r in rows if not r["disqualified"]]
    removed = [str(r["id"]) for r in rows if r["disqualified"]]
    return changed, removed, {str(r["user_id"]): r["display_name"] for r in rows if r["user_id"] is not None}


async def record_verdict(
    pool: Pool, submission_id: uuid.UUID, verdict: str, passed: int, total: int, rev: int = 0
) -> Any:
    """Store a verdict judged at revision ``rev``; nothing if the submission was sent back since (a rejudge
    after an edit: the newer judging stores its own). The contest's id, or None when nothing was stored."""
    return await pool.fetchval(
        "UPDATE contest_submissions SET verdict = $2, passed = $3, total = $4, judged_at = now()"
        " WHERE id = $1 AND judge_rev = $5 RETURNING contest_id",
        submission_id,
        verdict,
        passed,
        total,
        rev,
    )
