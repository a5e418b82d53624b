"""Role checks shared by the services: platform roles (student < instructor < admin) and community roles."""

from __future__ import annotations

import uuid
from typing import Literal

from core_api.errors import forbidden
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
