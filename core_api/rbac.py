"""Role checks shared by the services: platform roles (student < instructor < admin) and community roles."""

from __future__ import annotations

import uuid
from typing import Literal

from core_api.db import Connection
from core_api.errors import forbidden, not_found
from core_api.http import Principal

CommunityRole = Literal["owner", "admin", "member"]
COMMUNITY_RANK: dict[str, int] = {"member": 1, "admin": 2, "owner": 3}


def require_role(user: Principal, *roles: str) -> None:
    if user.role not in roles:
        raise forbidden(f"requires role {' or '.join(roles)}")


def require_owner_or_admin(user: Principal, owner_id: uuid.UUID, what: str) -> None:
    """Only the owner of a resource (or a platform admin) may change it."""
    if user.id != owner_id and not user.is_admin:
        raise forbidden(f"only the {what}'s owner or an admin may do this")


async def community_role(conn: Connection, community_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
    role: str | None = await conn.fetchval(
        "SELECT role FROM community_members WHERE community_id = $1 AND user_id = $2", community_id, user_id
    )
    return role


async def require_community_role(
    conn: Connection, user: Principal, community_id: uuid.UUID, at_least: CommunityRole
) -> str | None:
    """Raise unless ``user`` holds ``at_least`` in the community (platform admins always pass).

    Returns the user's community role (None for a platform admin who is not a member).
    """
    exists = await conn.fetchval("SELECT 1 FROM communities WHERE id = $1", community_id)
    if not exists:
        raise not_found("community")
    role = await community_role(conn, community_id, user.id)
    if user.is_admin:
        return role
    if role is None or COMMUNITY_RANK[role] < COMMUNITY_RANK[at_least]:
        raise forbidden(f"requires community role {at_least} or higher")
    return role
