"""Every column that holds personal data or names a user, and what export and erasure do with it.

``on_delete``:

- ``"delete"``: the rows are the user's alone (their sessions, progress, memberships...): deleted, in the
  order listed (a table whose rows point at another's comes first).
- ``"anonymise"``: the account row itself: email, name and password hash are replaced, ``deleted_at`` set.
- ``"keep"``: the rows record something others depend on (a course they teach, a message in a shared room,
  a ledger entry, an audit entry, a grade they gave); they stay, pointing at the anonymised account, which
  shows as "Deleted user". ``why`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OnDelete = Literal["delete", "anonymise", "keep"]


@dataclass(frozen=True)
class Personal:
    table: str
    column: str  # the column holding the user's id (or, for ``users``, ``id``)
    on_delete: OnDelete
    why: str = ""
    export: bool = True  # the user's rows of this table go into the export (by this column)
    also: tuple[str, ...] = ()  # more personal columns of the same rows (exported, erased with them)


REGISTRY: tuple[Personal, ...] = (
    Personal(
        "users",
        "id",
        "anonymise",
        "the account row stays so that kept rows still refer to it",
        also=("email", "display_name", "bio"),
    ),
    Personal("avatars", "user_id", "delete"),
    Personal("sessions", "user_id", "delete", also=("address", "user_agent")),
    Personal("refresh_tokens", "user_id", "delete"),
    Personal("password_resets", "user_id", "delete"),
    Personal("notifications", "user_id", "delete"),
    Personal("notification_preferences", "user_id", "delete"),
    Personal("announcements", "author_id", "keep", "learners keep the course's announcements"),
    Personal("enrollments", "user_id", "delete"),
    Personal("lecture_progress", "user_id", "delete"),
    Personal("watch_clocks", "user_id", "delete"),
    Personal("certificates", "user_id", "delete"),
    # before submissions: its rows point at theirs (the bytes go from media storage too, core_api/privacy/erase.py)
    Personal("submission_files", "owner_id", "delete", also=("filename",)),
    Personal("submissions", "user_id", "delete"),
    Personal("submissions", "graded_by", "keep", "a grade given to someone else stays theirs", export=False),
    Personal("quiz_attempts", "user_id", "delete"),
    # Analytics (migration 0034): the score that counts per item (deleting it takes it out of the distribution,
    # by trigger), and the last day a learner was counted active. The counts themselves hold no one's id.
    Personal("analytics_scores", "user_id", "delete"),
    Personal("analytics_course_learners", "user_id", "delete"),
    Personal("analytics_platform_learners", "user_id", "delete"),
    Personal("analytics_contest_participants", "user_id", "delete"),
    Personal("teacher_applications", "user_id", "delete"),
    Personal("teacher_applications", "decided_by", "keep", "an admin's decision on someone else", export=False),
    Personal(
        "chat_messages",
        "author_id",
        "keep",
        "messages in shared rooms stay, shown as Deleted user, unless the user asks to erase them",
    ),
    Personal("chat_messages", "deleted_by", "keep", "who removed someone else's message (moderation)", export=False),
    Personal("chat_reactions", "user_id", "delete"),
    Personal("user_blocks", "blocker_id", "delete"),
    Personal("user_blocks", "blocked_id", "delete", "someone else's block of this user", export=False),
    Personal("forum_topics", "author_id", "keep", "topics others replied to stay, shown as Deleted user"),
    Personal("forum_posts", "author_id", "keep", "posts in shared threads stay, shown as Deleted user"),
    Personal("forum_posts", "deleted_by", "keep", "who removed someone else's post (moderation)", export=False),
    Personal("forum_votes", "user_id", "keep", "a post's score stays as others saw it; the vote is anonymous"),
    Personal("community_members", "user_id", "delete"),
    Personal("room_members", "user_id", "delete"),
    Personal("room_members", "invited_by", "keep", "another member's invitation", export=False),
    Personal("workspace_members", "user_id", "delete"),
    Personal("workspace_members", "added_by", "keep", "another member's access", export=False),
    Personal("workspace_runs", "user_id", "delete"),  # before executions: its rows point at theirs
    Personal("executions", "user_id", "delete"),
    Personal(
        "jobs",
        "owner_id",
        "keep",
        "a lecture's processed video stays with the lecture; the user's data "
        "exports (kind data_export) are deleted with their files",
    ),
    Personal("uploads", "owner_id", "delete"),
    Personal("wallet_entries", "user_id", "keep", "the coin ledger must add up; the entries stay anonymous"),
    Personal("wallet_entries", "approved_by", "keep", "an admin's approval of someone else's entry", export=False),
    Personal("contest_submissions", "user_id", "keep", "contest results and standings others earned stay"),
    Personal("courses", "owner_id", "keep", "learners keep the courses they enrolled in"),
    Personal("courses", "deleted_by", "keep", "the record of who deleted a course (soft)", export=False),
    Personal("rooms", "created_by", "keep", "members keep their room"),
    Personal("communities", "created_by", "keep", "members keep their community"),
    Personal("workspaces", "created_by", "keep", "members keep their workspace"),
    Personal("contests", "created_by", "keep", "contests others took part in stay"),
    Personal("contests", "approved_by", "keep", "an admin's approval", export=False),
    Personal("contest_templates", "created_by", "keep", "weekly contests others take part in stay"),
    Personal("contest_templates", "approved_by", "keep", "an admin's approval", export=False),
    Personal("contest_communities", "invited_by", "keep", "a community's invitation", export=False),
    Personal("contest_communities", "answered_by", "keep", "a community's answer", export=False),
    Personal("contest_template_communities", "invited_by", "keep", "a community's invitation", export=False),
    Personal("contest_template_communities", "answered_by", "keep", "a community's answer", export=False),
    Personal("contest_rejudges", "actor_id", "keep", "the record of a rejudge", export=False),
    Personal("prize_budget_entries", "actor_id", "keep", "the prize budget's ledger", export=False),
    Personal("live_sessions", "host_id", "keep", "a session's history for its attendees"),
    Personal("live_attendance", "user_id", "delete"),
    Personal("live_sessions", "created_by", "keep", "a session's history for its attendees", export=False),
    Personal("live_sessions", "cancelled_by", "keep", "a session's history", export=False),
    Personal("lecture_drafts", "created_by", "keep", "a course's recording stays the course's", export=False),
    Personal("quizzes", "created_by", "keep", "learners keep the quizzes they took"),
    Personal("audit_log", "actor_id", "keep", "the audit log is kept (GDPR art. 17(3)(b), (e))"),
)

# Columns that look personal by name but are not (checked by tests/test_privacy.py, with the reason).
NOT_PERSONAL: dict[tuple[str, str], str] = {
    ("jobs", "claimed_by"): "the id of the runner (a process) holding the job",
    ("notification_preferences", "email"): "whether to send email (a yes or no), not an address",
    ("quiz_attempts", "finished_by"): "how an attempt ended: submitted, or the time limit",
    ("communities", "name"): "a community's name",
    ("rooms", "name"): "a room's name",
    ("workspaces", "name"): "a workspace's name",
    ("schema_migrations", "name"): "a migration's name",
}

# Never exported: secrets (hashes of passwords and tokens), and the search index's columns (derived from the
# exported text; core_api/search/).
SECRET_COLUMNS = frozenset({"password_hash", "token_hash", "search"})
