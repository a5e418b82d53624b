"""``DELETE /me``: erase the caller's account (GDPR article 17), in one transaction.

The password is asked again (a stolen session alone cannot delete an account). Then, per
:data:`~core_api.privacy.registry.REGISTRY`: rows that are only the user's are deleted; the account row is
anonymised (email ``deleted-<id>@deleted.invalid``, name "Deleted user", no password, ``deleted_at``), so
courses, rooms, contests, ledger entries and the audit log that refer to it keep their shape and show
"Deleted user"; chat messages stay under that name, or are erased too (``erase_messages``: their text
removed, as a deletion shows them). The user's data exports, uploads and submissions' attached files go with
their bytes. Every session ends, and open connections are closed (the account no longer exists for them). The
last administrator cannot delete their account (409): someone must be able to run the platform. Audited
(``user.deleted``).
"""

from __future__ import annotations

import contextlib
import logging
import uuid

from pydantic import Field

from core_api.auth import AUTH, TAG, end_sessions
from core_api.context import Core, audit, core_of, rights_changed
from core_api.errors import AppError, ErrorCode, conflict, invalid, unauthorized
from core_api.http import Api, Call, Input
from core_api.privacy.export import KIND as EXPORT_KIND
from core_api.privacy.registry import REGISTRY
from media.jobs import JOBS

log = logging.getLogger(__name__)
api = Api()
DELETED_NAME = "Deleted user"


class DeleteAccountIn(Input):
    password: str = Field(min_length=1, max_length=256, description="Your current password, to confirm.")
    erase_messages: bool = Field(
        False,
        description="Also erase the text of every chat message you wrote (they show as deleted). By default "
        "they stay, under the name Deleted user, so conversations others took part in still make sense.",
    )


async def delete_account(core: Core, call: Call, body: DeleteAccountIn) -> None:
    auth = call.request.app[AUTH]
    user = call.me
    key = user.email.strip().lower()
    wait = await auth.by_account.retry_after(key)
    if wait > 0:
        raise AppError(
            ErrorCode.RATE_LIMITED, "too many wrong passwords; try again later", {"retry_after_s": int(wait) + 1}
        )
    stored = await core.pool.fetchval("SELECT password_hash FROM users WHERE id = $1", user.id)
    if not await auth.passwords.verify(stored, body.password):
        await auth.by_account.fail(key)
        raise invalid("the password is wrong", field="password")
    async with core.transaction() as tx:
        row = await tx.conn.fetchrow("SELECT role, deleted_at FROM users WHERE id = $1 FOR UPDATE", user.id)
        if row is None or row["deleted_at"] is not None:
            raise unauthorized("account no longer exists")
        if row["role"] == "admin":
            # Admins lock their rows in one order (by id), so two last admins cannot both leave.
            admins = await tx.conn.fetch(
                "SELECT id FROM users WHERE role = 'admin' AND deleted_at IS NULL ORDER BY id FOR UPDATE"
            )
            if len(admins) <= 1:
                raise conflict("you are the only administrator: make someone else an administrator first")
        if body.erase_messages:
            await tx.conn.execute(
                "UPDATE chat_messages SET body = '', deleted_at = coalesce(deleted_at, now()),"
                " deleted_by = coalesce(deleted_by, author_id), rev = rev + 1 WHERE author_id = $1",
                user.id,
            )
        await end_sessions(tx.conn, user.id)
        exports = await tx.conn.fetch(
            "DELETE FROM jobs WHERE owner_id = $1 AND kind = $2 RETURNING id", user.id, EXPORT_KIND
        )
        uploads = await tx.conn.fetch("SELECT id FROM uploads WHERE owner_id = $1", user.id)
        attached = await tx.conn.fetch("SELECT id FROM submission_files WHERE owner_id = $1", user.id)
        for entry in REGISTRY:
            if entry.on_delete == "delete":
                await tx.conn.execute(f'DELETE FROM "{entry.table}" WHERE "{entry.column}" = $1', user.id)
        await tx.conn.execute(
            "UPDATE users SET email = 'deleted-' || id || '@deleted.invalid', display_name = $2,"
            " password_hash = '!', role = 'student', bio = '', avatar_version = NULL, deleted_at = now() WHERE id = $1",
            user.id,
            DELETED_NAME,
        )
        await audit(tx, user.id, "user.deleted", "user", user.id, erased_messages=body.erase_messages)
        rights_changed(tx, user.id)  # open connections: the account is gone, so they are closed
    runner = call.request.app.get(JOBS)
    if runner is not None:  # the files of what was deleted (best effort: a failure leaves only unreachable files)
        for job in exports:
            with contextlib.suppress(Exception):
                await runner.storage.remove_output(job["id"])
        for upload in uploads:
            with contextlib.suppress(Exception):
                await runner.storage.remove_upload(uuid.UUID(str(upload["id"])))
        for file in attached:
            with contextlib.suppress(Exception):
                await runner.storage.remove_file(uuid.UUID(str(file["id"])))


@api.route(
    "DELETE",
    "/me",
    summary="Delete your account (your personal data is erased; see the description for what stays)",
    description="Needs your password (400 `invalid_input`, field `password`, when wrong; counted like a failed "
    "login). Deleted: your sessions, progress, enrollments, certificates, submissions and their files, quiz attempts, "
    "reactions, "
    "memberships, runs, uploads, notifications and data exports. Anonymised: the account (email, name and "
    "password gone; it shows as Deleted user). Kept, under that name: chat messages (unless `erase_messages`), "
    "contest submissions and results, the coin ledger, what you created for others (courses, rooms, "
    "communities, contests, workspaces) and the audit log. Every session ends at once. The last administrator "
    "gets 409. Audited (`user.deleted`). Irreversible.",
    tag=TAG,
    body=DeleteAccountIn,
    status=204,
    errors=[409, 429, 503],
)
async def delete_me(call: Call) -> None:
    await delete_account(core_of(call), call, call.body)
