"""Deadline reminders: before an assignment is due or a quiz closes, each enrolled learner who has not handed
it in (or taken it) is reminded — ``STUDYHALL_REMINDER_LEADS_S`` before (24 h and 1 h by default), in the app
and by email, as their ``deadline_reminder`` preference says.

Exactly once across nodes: every node runs the pass (:meth:`Reminders.run`, every
``STUDYHALL_REMINDER_CYCLE_S``), and each (item, lead) is *claimed* by inserting its row into
``reminder_claims``; the primary key lets one insert win, and only the winner sends, in the same transaction,
so a crash before the commit leaves the claim for the next pass. This needs no Celery beat or leader election:
a node that is down simply does not take part. A lead is taken only in its own window — between the next
shorter lead and itself — so an assignment created 30 minutes before its deadline gets the 1 h reminder, not
both.

The same pass tells the members of every community taking part in a contest (having accepted its
invitation) that it starts, ``STUDYHALL_CONTEST_START_NOTICE_S`` before it does (``contest_starting``), once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from core_api.announcements.fanout import notify_users
from core_api.context import Core

log = logging.getLogger(__name__)
BATCH = 100

# kind: (table, deadline column, who has already done it: SQL over $1 = item id, returning user ids)
_ITEMS: dict[str, tuple[str, str, str]] = {
    "assignment": ("assignments", "due_at", "SELECT user_id FROM submissions WHERE assignment_id = $1"),
    "quiz": ("quizzes", "closes_at",
             "SELECT user_id FROM quiz_attempts WHERE quiz_id = $1 AND submitted_at IS NOT NULL"),
}  # fmt: skip


def _when(lead_s: int) -> str:
    hours = lead_s / 3600
    if hours >= 1:
        return f"{hours:g} hour" + ("" if hours == 1 else "s")
    return f"{lead_s // 60} minutes"


class Reminders:
    def __init__(self, core: Core, clock: Callable[[], datetime] | None = None) -> None:
        self.core = core
        self.clock = clock or (lambda: datetime.now(UTC))

    @property
    def leads(self) -> list[int]:
        return sorted({int(x) for x in self.core.settings.reminder_leads_s if int(x) > 0}, reverse=True)

    async def tick(self) -> int:
        """One pass: claim and send every reminder that is due now; returns how many items were reminded."""
        now = self.clock()
        leads = self.leads
        sent = 0
        for i, lead in enumerate(leads):
            shorter = leads[i + 1] if i + 1 < len(leads) else 0
            for kind in _ITEMS:
                sent += await self._due(kind, lead, shorter, now)
        return sent + await self._contests(now)

    async def _contests(self, now: datetime) -> int:
        notice = int(self.core.settings.contest_start_notice_s)
        if notice <= 0:
            return 0
        sent = 0
        while True:
            async with self.core.transaction() as tx:
                claimed = await tx.conn.fetch(
                    """INSERT INTO reminder_claims (item_kind, item_id, lead_s)
                       SELECT 'contest', c.id, $1 FROM contests c
                        WHERE c.starts_at > $2 AND c.starts_at <= $3 AND c.finalised_at IS NULL
                          AND NOT EXISTS (SELECT 1 FROM reminder_claims r
                                           WHERE r.item_kind = 'contest' AND r.item_id = c.id AND r.lead_s = $1)
                        ORDER BY c.starts_at LIMIT $4
                       ON CONFLICT DO NOTHING RETURNING item_id""",
                    notice, now, now + timedelta(seconds=notice), BATCH,
                )  # fmt: skip
                for claim in claimed:
                    contest = await tx.conn.fetchrow(
                        "SELECT id, title, starts_at FROM contests WHERE id = $1", claim["item_id"]
                    )
                    members = await tx.conn.fetch(
                        """SELECT DISTINCT m.user_id FROM contest_communities cc
                             JOIN community_members m ON m.community_id = cc.community_id
                            WHERE cc.contest_id = $1 AND cc.state = 'accepted'""",
                        claim["item_id"],
                    )
                    payload = {"contest_id": str(contest["id"]), "title": contest["title"],
                               "starts_at": contest["starts_at"].isoformat()}  # fmt: skip
                    link = f"{self.core.settings.base_url}/contests/{contest['id']}"
                    mail = (f"Contest starting: {contest['title']}",
                            f"“{contest['title']}” starts at {contest['starts_at'].astimezone(UTC):%Y-%m-%d %H:%M} "
                            f"UTC.\n\n{link}\n")  # fmt: skip
                    await notify_users(tx, [m["user_id"] for m in members], "contest_starting", payload, mail)
            sent += len(claimed)
            if len(claimed) < BATCH:
                return sent

    async def _due(self, kind: str, lead: int, shorter: int, now: datetime) -> int:
        table, column, done_sql = _ITEMS[kind]
        sent = 0
        while True:
            async with self.core.transaction() as tx:
                claimed = await tx.conn.fetch(
                    f"""INSERT INTO reminder_claims (item_kind, item_id, lead_s)
                        SELECT $1, t.id, $2 FROM {table} t
                         WHERE t.{column} > $3 AND t.{column} <= $4
                           AND NOT EXISTS (SELECT 1 FROM reminder_claims c
                                            WHERE c.item_kind = $1 AND c.item_id = t.id AND c.lead_s = $2)
                         ORDER BY t.{column} LIMIT $5
                        ON CONFLICT DO NOTHING RETURNING item_id""",
                    kind, lead, now + timedelta(seconds=shorter), now + timedelta(seconds=lead), BATCH,
                )  # fmt: skip
                for claim in claimed:
                    await self._send(tx, kind, claim["item_id"], lead, done_sql, table, column)
            sent += len(claimed)
            if len(claimed) < BATCH:
                return sent

    async def _send(self, tx: Any, kind: str, item_id: Any, lead: int, done_sql: str, table: str, column: str) -> None:
        item = await tx.conn.fetchrow(
            f"SELECT t.id, t.title, t.{column} AS deadline, c.id AS course_id, c.title AS course_title"
            f" FROM {table} t JOIN courses c ON c.id = t.course_id WHERE t.id = $1",
            item_id,
        )
        if item is None:
            return
        done = {r["user_id"] for r in await tx.conn.fetch(done_sql, item_id)}
        learners = [
            r["user_id"]
            for r in await tx.conn.fetch("SELECT user_id FROM enrollments WHERE course_id = $1", item["course_id"])
            if r["user_id"] not in done
        ]
        what = "Assignment" if kind == "assignment" else "Quiz"
        verb = "is due" if kind == "assignment" else "closes"
        payload = {
            "item_kind": kind, "item_id": str(item_id), "title": item["title"], "course_id": str(item["course_id"]),
            "course_title": item["course_title"], "deadline": item["deadline"].isoformat(), "lead_s": lead,
        }  # fmt: skip
        link = f"{self.core.settings.base_url}/courses/{item['course_id']}"
        subject = f"{what} {verb} in {_when(lead)}: {item['title']}"
        text = (
            f"{what} “{item['title']}” in {item['course_title']} {verb} at "
            f"{item['deadline'].astimezone(UTC):%Y-%m-%d %H:%M} UTC.\n\n{link}\n\n"
            "You get this because you are enrolled in the course; turn deadline reminders off in your profile.\n"
        )
        await notify_users(tx, learners, "deadline_reminder", payload, (subject, text))

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("the deadline reminder pass failed; trying again in %.0f s", interval_s)
            await asyncio.sleep(interval_s)
