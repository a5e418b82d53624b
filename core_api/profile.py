"""The caller's own profile: changing one's display name (``PATCH /me``).

A display name is what other people see beside someone's messages, in a room's people list, in @mention
suggestions and on contest standings, so changing it is guarded against impersonation:

- **Validated** (:func:`clean_display_name`): NFKC-normalised, trimmed, runs of white space made one
  space, 1 to :data:`MAX_LENGTH` characters, at least one letter or digit, no control, format (zero-width,
  bidirectional overrides), private-use, unassigned or other invisible characters, and at most
  :data:`MAX_MARKS` combining marks on one character.
- **Not confusable** with another user's current display name: two names are confusably equal when their
  keys are — NFKC, lower-cased, white space and invisible characters removed (``display_name_key`` in
  migration 0019, the one definition used by the check and its index). The key also covers how mentions
  are read (lower-cased, white space removed), so a new name never captures another user's @mentions.
  Look-alike letters of other scripts (Cyrillic "а" for Latin "a") are not caught.
- **Rate limited**: ``display_name_changes_per_day`` changes in any 24 hours (counted in the audit log,
  so the limit holds across nodes and restarts), then 429 with ``Retry-After``.
- **Audited**: ``user.renamed`` with the names before and after.

How a new name reaches others: names are read by user id when they are shown, not copied — chat
history, room and community member lists, presence snapshots (the ``room:join`` answer) and contest
standings all join ``users`` at read time. What is live: the user's open connections re-read their account
(the rights-changed mechanism), so new messages carry the new name; every room they are present in hears
``room:renamed {room_id, user}`` (rooms/live.py); the standings read the name again at their next change
(the user's submissions are marked changed). Messages already delivered keep the name they were sent
with until the screen reads them again; @mentions resolve against current names at send time, so
``@OldName`` no longer reaches anyone.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta

from pydantic import Field, field_validator

from core_api.auth import TAG, UserOut, account, user_out
from core_api.context import Core, audit, core_of, rights_changed
from core_api.db import Record
from core_api.errors import conflict, invalid, refuse_past_limit, unauthorized
from core_api.http import Api, Call, Input, Principal
from core_api.names import MAX_LENGTH, clean_display_name

api = Api()

RENAME_ACTION = "user.renamed"
_WINDOW = timedelta(days=1)


BIO_MAX = 1000


def clean_bio(value: str) -> str:
    """NFC, trimmed, no control characters but newlines and tabs, at most :data:`BIO_MAX` characters."""
    value = unicodedata.normalize("NFC", value).strip()
    if any(unicodedata.category(c) in ("Cc", "Cf") and c not in "\n\t" for c in value):
        raise ValueError("no control or invisible characters")
    if len(value) > BIO_MAX:
        raise ValueError(f"at most {BIO_MAX} characters")
    return value


class ProfilePatch(Input):
    display_name: str | None = Field(
        None,
        min_length=1,
        max_length=4 * MAX_LENGTH,  # before normalising; the cleaned name is checked against MAX_LENGTH
        description=f"The new display name: NFKC-normalised and trimmed, 1 to {MAX_LENGTH} characters, with a "
        "letter or digit, no control or invisible characters, not confusable with another user's current name.",
    )

    bio: str | None = Field(
        None,
        max_length=4 * BIO_MAX,
        description=f"What you say about yourself, shown on your profile: at most {BIO_MAX} characters (line breaks "
        "kept; no control or invisible characters). Empty removes it.",
    )

    @field_validator("display_name")
    @classmethod
    def _clean(cls, value: str | None) -> str | None:
        return clean_display_name(value) if value is not None else None

    @field_validator("bio")
    @classmethod
    def _clean_bio(cls, value: str | None) -> str | None:
        return clean_bio(value) if value is not None else None


async def rename(core: Core, user: Principal, name: str, now: datetime | None = None) -> Record:
    """Set the user's display name (see the module docstring); the account as it is afterwards."""
    now = now or datetime.now(UTC)
    async with core.transaction() as tx:
        # FOR UPDATE: one rename of a user at a time, so two cannot both pass the daily count.
        before = await tx.conn.fetchval("SELECT display_name FROM users WHERE id = $1 FOR UPDATE", user.id)
        if before is None:
            raise unauthorized("account no longer exists")
        if before != name:
            recent = await tx.conn.fetch(
                "SELECT created_at FROM audit_log WHERE actor_id = $1 AND action = $2 AND target_id = $3"
                " AND created_at > $4 ORDER BY created_at",
                user.id,
                RENAME_ACTION,
                str(user.id),
                now - _WINDOW,
            )
            limit = core.settings.display_name_changes_per_day
            refuse_past_limit(
                [r["created_at"] for r in recent], limit, _WINDOW,
                f"you can change your display name {limit} times a day; try again later", now,
            )  # fmt: skip
            # Two users taking confusable names at once: the same key takes the same lock, so one waits
            # for the other's commit and then sees the name taken.
            await tx.conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('display_name:' || display_name_key($1)))", name
            )
            if await tx.conn.fetchval(
                "SELECT true FROM users WHERE display_name_key(display_name) = display_name_key($1) AND id <> $2"
                " LIMIT 1",
                name,
                user.id,
            ):
                raise conflict("this display name is too close to another user's; choose another", field="display_name")
            await tx.conn.execute("UPDATE users SET display_name = $2 WHERE id = $1", user.id, name)
            # The standings re-read their authors' names only from submissions marked changed.
            await tx.conn.execute("UPDATE contest_submissions SET user_id = user_id WHERE user_id = $1", user.id)
            await audit(tx, user.id, RENAME_ACTION, "user", user.id, before=before, after=name)
            # The user's open connections re-read the account: their new messages carry the new name, and
            # the rooms they are in hear room:renamed.
            rights_changed(tx, user.id)
    row = await account(core, user.id)
    if row is None:
        raise unauthorized("account no longer exists")
    return row


@api.route(
    "PATCH",
    "/me",
    summary="Change your display name and/or your bio",
    description=(
        "Any signed-in user, for their own account; `bio` (at most 1000 characters) is saved as it is sent. The "
        "name is normalised (NFKC, trimmed, single spaces) and "
        f"must be 1 to {MAX_LENGTH} characters with a letter or digit and no control or invisible characters "
        "(400 `invalid_input`); a name confusably equal to another user's current display name (the same after "
        "NFKC, lower-casing and removing white space and zero-width characters) is refused with 409 `conflict`; "
        "at most `STUDYHALL_DISPLAY_NAME_CHANGES_PER_DAY` changes in any 24 hours, then 429 `rate_limited` with "
        "`Retry-After`. Setting the current name again changes nothing and is not counted. Each change is "
        "written to the audit log (`user.renamed`).\n\n"
        "How others see the new name: lists and histories read names by user id when they are read (chat "
        "history, room and community members, the people present in a room's `room:join` answer, contest "
        "standings), so they show it at once; the user's live connections send new messages with it, and every "
        "room they are present in hears `room:renamed {room_id, user: {id, display_name}}`. @mentions resolve "
        "against current names, so `@OldName` no longer mentions anyone."
    ),
    tag=TAG,
    body=ProfilePatch,
    response=UserOut,
    errors=[409, 429],
)
async def patch_me(call: Call) -> UserOut:
    body: ProfilePatch = call.body
    if body.display_name is None and body.bio is None:
        raise invalid("send display_name, bio, or both")
    core = core_of(call)
    if body.bio is not None:
        async with core.transaction() as tx:
            await tx.conn.execute("UPDATE users SET bio = $2 WHERE id = $1", call.me.id, body.bio)
    if body.display_name is not None:
        return user_out(await rename(core, call.me, body.display_name))
    row = await account(core, call.me.id)
    if row is None:
        raise unauthorized("account no longer exists")
    return user_out(row)
