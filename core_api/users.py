"""User administration: listing accounts, granting platform roles, reading the audit log."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core_api.auth import ROLES, Role, UserOut, account, user_out
from core_api.context import (
    Core,
    Page,
    PageQuery,
    SearchText,
    audit,
    core_of,
    decode_cursor,
    notify,
    page_of,
    rights_changed,
)
from core_api.db import Record
from core_api.errors import forbidden, invalid, not_found
from core_api.http import Api, Call, Input, Principal
from core_api.timestamps import Timestamp

api = Api()


class RoleIn(Input):
    role: Role


class UserListQuery(PageQuery):
    q: SearchText | None = Field(
        None,
        min_length=1,
        max_length=254,
        description="Only accounts whose email or display name contains this (any case).",
    )


class AuditQuery(PageQuery):
    actor_id: uuid.UUID | None = Field(None, description="Only actions by this user.")
    action: SearchText | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Only this action (`user.role_granted`), or those starting "
        "with it and a dot (`community` for every `community.*`).",
    )
    since: Timestamp | None = Field(None, description="Only entries at or after this time (ISO 8601, with a timezone).")
    until: Timestamp | None = Field(None, description="Only entries before this time (ISO 8601, with a timezone).")


class AuditEntry(BaseModel):
    id: uuid.UUID
    actor_id: uuid.UUID | None
    action: str
    target_kind: str
    target_id: str
    details: dict[str, Any]
    created_at: datetime


def _audit_out(r: Record) -> AuditEntry:
    return AuditEntry(**dict(r))


async def grant_role(core: Core, actor: Principal, user_id: uuid.UUID, role: str) -> Record:
    if role not in ROLES:
        raise invalid(f"role must be one of {', '.join(ROLES)}")
    if user_id == actor.id and role != "admin":
        raise invalid("admins cannot demote themselves; ask another admin")
    async with core.transaction() as tx:
        before = await tx.conn.fetchval("SELECT role FROM users WHERE id = $1 FOR UPDATE", user_id)
        if before is None:
            raise not_found("user")
        row = await tx.conn.fetchrow(
            "UPDATE users SET role = $2 WHERE id = $1"
            " RETURNING id, email, display_name, role, created_at, bio, avatar_version",
            user_id,
            role,
        )
        assert row is not None
        if before != role:
            await audit(tx, actor.id, "user.role_granted", "user", user_id, before=before, after=role)
            # Losing the admin role also ends the room memberships only it gave (a trigger, migration 0011).
            # First, so each node marks the user's open connections stale before the notification is out.
            rights_changed(tx, user_id)
            await notify(tx, user_id, "role_changed", {"role": role, "previous": before})
    return row


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching itself anywhere."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def list_accounts(core: Core, query: UserListQuery) -> Page[UserOut]:
    at, ident = decode_cursor(query.cursor)
    rows = await core.pool.fetch(
        "SELECT id, email, display_name, role, created_at, bio, avatar_version FROM users"
        " WHERE ($1::timestamptz IS NULL OR (created_at, id) > ($1, $2))"
        " AND ($4::text IS NULL OR email ILIKE $4 OR display_name ILIKE $4)"
        " ORDER BY created_at, id LIMIT $3",
        at,
        ident,
        query.limit + 1,
        _like(query.q) if query.q else None,
    )
    return page_of(rows, query.limit, user_out)


async def read_account(core: Core, actor: Principal, user_id: uuid.UUID) -> Record:
    if user_id != actor.id and not actor.is_admin:
        raise forbidden("only admins can read other accounts")
    row = await account(core, user_id)
    if row is None:
        raise not_found("user")
    return row


async def list_audit_log(core: Core, query: AuditQuery) -> Page[AuditEntry]:
    at, ident = decode_cursor(query.cursor)
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise invalid("since must be before until")
    rows = await core.pool.fetch(
        "SELECT id, actor_id, action, target_kind, target_id, details, created_at FROM audit_log"
        " WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2))"
        " AND ($4::uuid IS NULL OR actor_id = $4)"
        " AND ($5::text IS NULL OR action = $5 OR starts_with(action, $5 || '.'))"
        " AND ($6::timestamptz IS NULL OR created_at >= $6) AND ($7::timestamptz IS NULL OR created_at < $7)"
        " ORDER BY created_at DESC, id DESC LIMIT $3",
        at,
        ident,
        query.limit + 1,
        query.actor_id,
        query.action,
        query.since,
        query.until,
    )
    return page_of(rows, query.limit, _audit_out)


@api.route(
    "GET",
    "/users",
    summary="List accounts (admin)",
    tag="users",
    roles=["admin"],
    query=UserListQuery,
    response=Page[UserOut],
)
async def list_users(call: Call) -> Page[UserOut]:
    return await list_accounts(core_of(call), call.query)


@api.route(
    "GET", "/users/{user_id}", summary="One account (admin, or yourself)", tag="users", response=UserOut, errors=[403]
)
async def get_user(call: Call) -> UserOut:
    return user_out(await read_account(core_of(call), call.me, call.params["user_id"]))


@api.route(
    "PUT",
    "/users/{user_id}/role",
    summary="Grant a platform role (admin)",
    tag="users",
    roles=["admin"],
    body=RoleIn,
    response=UserOut,
)
async def set_user_role(call: Call) -> UserOut:
    return user_out(await grant_role(core_of(call), call.me, call.params["user_id"], call.body.role))


@api.route(
    "GET",
    "/audit",
    summary="The audit log of privileged actions, newest first (admin)",
    description="Filters combine: `actor_id`, `action` (exact, or a prefix before a dot), `since` and `until`.",
    tag="users",
    roles=["admin"],
    query=AuditQuery,
    response=Page[AuditEntry],
)
async def list_audit(call: Call) -> Page[AuditEntry]:
    return await list_audit_log(core_of(call), call.query)
