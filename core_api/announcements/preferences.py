"""What each user wants to hear about: per kind, in the app and by email (``GET/PUT /me/notification-preferences``).

Unset kinds take their defaults (:data:`KINDS`). Kinds not listed here (a role change, a mention, a community
invitation) are always delivered in the app: they concern the user's rights or were addressed to them.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field

from core_api.auth import TAG
from core_api.context import Core, core_of
from core_api.db import Connection
from core_api.errors import invalid
from core_api.http import Api, Call, Input

api = Api()

Kind = Literal[
    "announcement", "new_assignment", "new_quiz", "new_lecture", "live_session", "contest_starting", "deadline_reminder"
]
# kind: (what it is, in-app by default, email by default)
KINDS: dict[str, tuple[str, bool, bool]] = {
    "announcement": ("Announcements in your courses", True, True),
    "new_assignment": ("New assignments in your courses", True, False),
    "new_quiz": ("New quizzes in your courses", True, False),
    "new_lecture": ("New lectures in your courses", True, False),
    "live_session": ("Live sessions scheduled and starting", True, False),
    "contest_starting": ("Contests of your communities starting", True, False),
    "deadline_reminder": ("Reminders before assignments and quizzes are due", True, True),
}


class Preference(BaseModel):
    kind: Kind
    label: str
    in_app: bool
    email: bool


class PreferenceList(BaseModel):
    items: list[Preference]


class PreferenceChange(BaseModel):
    in_app: bool | None = None
    email: bool | None = None


class PreferencesIn(Input):
    kinds: dict[Kind, PreferenceChange] = Field(
        description="The kinds to change, each with `in_app` and/or `email`; kinds left out keep their setting."
    )


async def preferences_of(conn: Connection, user_id: uuid.UUID) -> list[Preference]:
    rows = {r["kind"]: r for r in await conn.fetch(
        "SELECT kind, in_app, email FROM notification_preferences WHERE user_id = $1", user_id
    )}  # fmt: skip
    out = []
    for kind, (label, in_app, email) in KINDS.items():
        row = rows.get(kind)
        out.append(
            Preference(
                kind=kind,
                label=label,
                in_app=row["in_app"] if row else in_app,
                email=row["email"] if row else email,
            )
        )
    return out


async def update(core: Core, user_id: uuid.UUID, body: PreferencesIn) -> list[Preference]:
    if not body.kinds:
        raise invalid("name at least one kind to change")
    async with core.transaction() as tx:
        current = {p.kind: p for p in await preferences_of(tx.conn, user_id)}
        for kind, change in body.kinds.items():
            now = current[kind]
            await tx.conn.execute(
                "INSERT INTO notification_preferences (user_id, kind, in_app, email) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (user_id, kind) DO UPDATE SET in_app = EXCLUDED.in_app, email = EXCLUDED.email",
                user_id,
                kind,
                now.in_app if change.in_app is None else change.in_app,
                now.email if change.email is None else change.email,
            )
        return await preferences_of(tx.conn, user_id)


@api.route(
    "GET",
    "/me/notification-preferences",
    summary="What you are told about, per kind: in the app and by email",
    tag=TAG,
    response=PreferenceList,
)
async def get_preferences(call: Call) -> PreferenceList:
    async with core_of(call).pool.acquire() as conn:
        return PreferenceList(items=await preferences_of(conn, call.me.id))


@api.route(
    "PUT",
    "/me/notification-preferences",
    summary="Turn kinds of notifications on or off, in the app and by email",
    description="`{kinds: {announcement: {email: false}, new_lecture: {in_app: false}}}`: only what is named "
    "changes. Unknown kinds are refused (400).",
    tag=TAG,
    body=PreferencesIn,
    response=PreferenceList,
)
async def put_preferences(call: Call) -> PreferenceList:
    return PreferenceList(items=await update(core_of(call), call.me.id, call.body))
