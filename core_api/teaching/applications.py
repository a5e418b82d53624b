"""Teacher verification: a learner applies to teach; an admin approves (the role becomes ``instructor``) or
rejects, with a note; the applicant is notified either way, and everything is audited.

Rules: only learners (role ``student``) apply; one pending application per person (409); after a rejection a
new one waits ``STUDYHALL_TEACHER_REAPPLY_AFTER_S`` (429 with ``Retry-After``); an applicant may withdraw a
pending one. Admins see the queue (oldest first) and decide once (409 for an application already decided).
New applications notify the admins (at most ``STUDYHALL_TEACHER_APPLICATION_NOTIFY_MAX`` of them).
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from core_api.context import (
    Core,
    Page,
    PageQuery,
    audit,
    core_of,
    decode_cursor,
    new_id,
    notify,
    page_of,
    rights_changed,
)
from core_api.db import Record
from core_api.errors import AppError, ErrorCode, conflict, forbidden, not_found
from core_api.http import Api, Call, Input, Principal, Reply
from core_api.rbac import require_role

api = Api()
TAG = "teaching"
State = Literal["pending", "approved", "rejected", "withdrawn"]
_COLUMNS = """a.id, a.user_id, u.display_name, u.email, a.qualifications, a.links, a.state, a.created_at,
    a.decided_at, a.note"""


class ApplicationIn(Input):
    qualifications: str = Field(
        min_length=20, max_length=5000, description="What you can teach and why: experience, degrees, courses given."
    )
    links: list[str] = Field(
        default_factory=list, max_length=5, description="Up to 5 https links (a portfolio, a profile, publications)."
    )

    @field_validator("qualifications")
    @classmethod
    def _trimmed(cls, value: str) -> str:
        value = value.strip()
        if len(value) < 20:
            raise ValueError("say a little more about your qualifications (at least 20 characters)")
        return value

    @field_validator("links")
    @classmethod
    def _https(cls, value: list[str]) -> list[str]:
        for link in value:
            if not link.startswith("https://") or len(link) > 500 or any(c.isspace() for c in link):
                raise ValueError("links must be https:// URLs of at most 500 characters")
        return value


class DecisionIn(Input):
    decision: Literal["approve", "reject"]
    note: str = Field("", max_length=2000, description="Told to the applicant (the reason, for a rejection).")


class ApplicationOut(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    display_name: str
    email: str | None = Field(description="The applicant's email, for admins; null for the applicant's own view.")
    qualifications: str
    links: list[str]
    state: State
    created_at: datetime
    decided_at: datetime | None
    note: str


class ApplicationQuery(PageQuery):
    state: State | None = Field("pending", description="Only applications in this state (default: pending).")


def application_out(r: Record, admin: bool) -> ApplicationOut:
    data = dict(r)
    if not admin:
        data["email"] = None
    return ApplicationOut(**data)


async def apply(core: Core, user: Principal, body: ApplicationIn) -> Record:
    if user.role != "student":
        raise conflict("you can already teach: your role is " + user.role)
    async with core.transaction() as tx:
        lock = "SELECT pg_advisory_xact_lock(hashtext('teacher_application:' || $1::uuid::text))"
        await tx.conn.execute(lock, user.id)  # one application of a user at a time
        if await tx.conn.fetchval(
            "SELECT true FROM teacher_applications WHERE user_id = $1 AND state = 'pending'", user.id
        ):
            raise conflict("you already have an application waiting for a decision")
        rejected = await tx.conn.fetchval(
            "SELECT max(decided_at) FROM teacher_applications WHERE user_id = $1 AND state = 'rejected'", user.id
        )
        wait_s = core.settings.teacher_reapply_after_s
        if rejected is not None:
            left = (rejected + timedelta(seconds=wait_s) - datetime.now(UTC)).total_seconds()
            if left > 0:
                raise AppError(
                    ErrorCode.RATE_LIMITED,
                    "your last application was turned down recently; you can apply again later",
                    {"retry_after_s": math.ceil(left)},
                )
        application_id = new_id()
        await tx.conn.execute(
            "INSERT INTO teacher_applications (id, user_id, qualifications, links) VALUES ($1, $2, $3, $4)",
            application_id,
            user.id,
            body.qualifications,
            body.links,
        )
        await audit(tx, user.id, "teacher_application.submitted", "teacher_application", application_id)
        admins = await tx.conn.fetch(
            "SELECT id FROM users WHERE role = 'admin' AND deleted_at IS NULL ORDER BY created_at LIMIT $1",
            core.settings.teacher_application_notify_max,
        )
        for admin in admins:
            await notify(
                tx,
                admin["id"],
                "teacher_application",
                {"application_id": str(application_id), "user_id": str(user.id), "display_name": user.display_name},
            )
        row = await tx.conn.fetchrow(
            f"SELECT {_COLUMNS} FROM teacher_applications a JOIN users u ON u.id = a.user_id WHERE a.id = $1",
            application_id,
        )
    assert row is not None
    return row


async def withdraw(core: Core, user: Principal, application_id: uuid.UUID) -> Record:
    async with core.transaction() as tx:
        done = await tx.conn.fetchval(
            "UPDATE teacher_applications SET state = 'withdrawn', decided_at = now() WHERE id = $1 AND user_id = $2"
            " AND state = 'pending' RETURNING id",
            application_id,
            user.id,
        )
        if done is None:
            raise not_found("no pending application of yours with this id")
        await audit(tx, user.id, "teacher_application.withdrawn", "teacher_application", application_id)
        row = await tx.conn.fetchrow(
            f"SELECT {_COLUMNS} FROM teacher_applications a JOIN users u ON u.id = a.user_id WHERE a.id = $1",
            application_id,
        )
    assert row is not None
    return row


async def decide(core: Core, admin: Principal, application_id: uuid.UUID, body: DecisionIn) -> Record:
    if not admin.is_admin:
        raise forbidden("only admins decide on applications to teach")
    async with core.transaction() as tx:
        app = await tx.conn.fetchrow(
            "SELECT id, user_id, state FROM teacher_applications WHERE id = $1 FOR UPDATE", application_id
        )
        if app is None:
            raise not_found("application")
        if app["state"] != "pending":
            raise conflict(f"this application is already {app['state']}")
        state = "approved" if body.decision == "approve" else "rejected"
        await tx.conn.execute(
            "UPDATE teacher_applications SET state = $2, decided_at = now(), decided_by = $3, note = $4 WHERE id = $1",
            application_id,
            state,
            admin.id,
            body.note.strip(),
        )
        await audit(tx, admin.id, f"teacher_application.{state}", "teacher_application", application_id, note=body.note)
        if state == "approved":
            before = await tx.conn.fetchval(
                "SELECT role FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE", app["user_id"]
            )
            if before == "student":
                await tx.conn.execute("UPDATE users SET role = 'instructor' WHERE id = $1", app["user_id"])
                await audit(
                    tx, admin.id, "user.role_granted", "user", app["user_id"], before=before, after="instructor"
                )
                rights_changed(tx, app["user_id"])
                await notify(tx, app["user_id"], "role_changed", {"role": "instructor", "previous": before})
        await notify(
            tx,
            app["user_id"],
            "teacher_application_decided",
            {"application_id": str(application_id), "state": state, "note": body.note.strip()},
        )
        row = await tx.conn.fetchrow(
            f"SELECT {_COLUMNS} FROM teacher_applications a JOIN users u ON u.id = a.user_id WHERE a.id = $1",
            application_id,
        )
    assert row is not None
    return row


async def queue(core: Core, admin: Principal, query: ApplicationQuery) -> Page[ApplicationOut]:
    require_role(admin, "admin")
    at, ident = decode_cursor(query.cursor)
    rows = await core.pool.fetch(
        f"""SELECT {_COLUMNS} FROM teacher_applications a JOIN users u ON u.id = a.user_id
            WHERE ($1::text IS NULL OR a.state = $1)
              AND ($2::timestamptz IS NULL OR (a.created_at, a.id) > ($2, $3))
            ORDER BY a.created_at, a.id LIMIT $4""",
        query.state,
        at,
        ident,
        query.limit + 1,
    )
    return page_of(rows, query.limit, lambda r: application_out(r, True))


class ApplicationList(BaseModel):
    items: list[ApplicationOut]


@api.route(
    "POST",
    "/teacher-applications",
    summary="Apply to teach (learners): your qualifications, for an admin to decide on",
    description="Only role `student` (409 otherwise); one pending application at a time (409); after a rejection, "
    "again only after `STUDYHALL_TEACHER_REAPPLY_AFTER_S` (429 with `Retry-After`). Admins are notified "
    "(`teacher_application`). Audited.",
    tag=TAG,
    body=ApplicationIn,
    response=ApplicationOut,
    status=201,
    errors=[409, 429],
)
async def post_application(call: Call) -> Reply:
    return Reply(application_out(await apply(core_of(call), call.me, call.body), False), status=201)


@api.route(
    "GET",
    "/me/teacher-applications",
    summary="Your applications to teach, newest first, with their decisions",
    tag=TAG,
    response=ApplicationList,
)
async def get_my_applications(call: Call) -> ApplicationList:
    rows = await core_of(call).pool.fetch(
        f"SELECT {_COLUMNS} FROM teacher_applications a JOIN users u ON u.id = a.user_id WHERE a.user_id = $1"
        " ORDER BY a.created_at DESC LIMIT 20",
        call.me.id,
    )
    return ApplicationList(items=[application_out(r, False) for r in rows])


@api.route(
    "POST",
    "/teacher-applications/{application_id}/withdraw",
    summary="Withdraw your pending application",
    tag=TAG,
    response=ApplicationOut,
    errors=[404],
)
async def post_withdraw(call: Call) -> ApplicationOut:
    return application_out(await withdraw(core_of(call), call.me, call.params["application_id"]), False)


@api.route(
    "GET",
    "/teacher-applications",
    summary="Applications to teach (admins): the queue, oldest first",
    tag=TAG,
    query=ApplicationQuery,
    response=Page[ApplicationOut],
    roles=["admin"],
)
async def get_applications(call: Call) -> Page[ApplicationOut]:
    return await queue(core_of(call), call.me, call.query)


@api.route(
    "POST",
    "/teacher-applications/{application_id}/decision",
    summary="Approve (the applicant becomes an instructor) or reject an application (admins)",
    description="Once per application (409 when already decided or withdrawn). The applicant is notified "
    "(`teacher_application_decided`, with the note; and `role_changed` on approval). Audited.",
    tag=TAG,
    body=DecisionIn,
    response=ApplicationOut,
    roles=["admin"],
    errors=[404, 409],
)
async def post_decision(call: Call) -> ApplicationOut:
    return application_out(await decide(core_of(call), call.me, call.params["application_id"], call.body), True)
