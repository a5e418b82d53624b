"""Who may see, edit and manage a workspace: the one place these rules live.

- Platform admins and the workspace's creator edit and manage it.
- A workspace opened in a room: the room's host and moderators edit and manage it; its other members
  (not banned) get the workspace's ``room_access`` (``edit`` or ``read``).
- An explicit member row (``workspace_members``) gives its access and overrides the room's.
- In an archived room everyone but admins is read-only.
- Anyone else cannot see the workspace at all: it answers ``not_found`` (REST 404, websocket 4404).

Room membership is read from the rooms package's ``room_members`` table in the same query, so one
round trip decides a websocket connection.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from core_api.db import Connection, Pool, Record
from core_api.errors import forbidden, not_found
from core_api.http import Principal

WORKSPACE_COLUMNS = "w.id, w.name, w.language, w.entry, w.room_id, w.room_access, w.created_by, w.created_at"
# $1 is the caller: every row carries the caller's explicit access and room role.
WORKSPACE_VIEW = f"""{WORKSPACE_COLUMNS}, wm.access AS member_access, rm.role AS room_role,
    r.archived_at AS room_archived_at
    FROM workspaces w
    LEFT JOIN workspace_members wm ON wm.workspace_id = w.id AND wm.user_id = $1
    LEFT JOIN room_members rm ON rm.room_id = w.room_id AND rm.user_id = $1 AND rm.banned_at IS NULL
    LEFT JOIN rooms r ON r.id = w.room_id"""


def visible_sql(user_param: str, admin_param: str) -> str:
    """The SQL twin of :func:`access_of` being not None, for listing rows of :data:`WORKSPACE_VIEW`."""
    return f"({admin_param} OR w.created_by = {user_param} OR wm.user_id IS NOT NULL OR rm.user_id IS NOT NULL)"


@dataclass(frozen=True)
class Access:
    edit: bool
    manage: bool

    @property
    def level(self) -> str:
        return "edit" if self.edit else "read"


def access_of(row: Record, user: Principal) -> Access | None:
    """What ``user`` may do with the workspace in ``row`` (a :data:`WORKSPACE_VIEW` row); None: nothing."""
    if user.is_admin:
        return Access(edit=True, manage=True)
    archived = row["room_archived_at"] is not None
    if row["created_by"] == user.id:
        return Access(edit=not archived, manage=True)
    room_role = row["room_role"]
    if room_role in ("host", "moderator"):
        return Access(edit=not archived, manage=True)
    granted = row["member_access"] or (row["room_access"] if room_role is not None else None)
    if granted is None:
        return None
    return Access(edit=granted == "edit" and not archived, manage=False)


async def workspace_row(conn: Connection | Pool, user: Principal, workspace_id: uuid.UUID) -> tuple[Record, Access]:
    """The workspace as ``user`` sees it, and their access; not_found if they may not see it."""
    row: Record | None = await conn.fetchrow(f"SELECT {WORKSPACE_VIEW} WHERE w.id = $2", user.id, workspace_id)
    if row is None:
        raise not_found("workspace")
    access = access_of(row, user)
    if access is None:
        raise not_found("workspace")
    return row, access


def require_manage(access: Access) -> None:
    if not access.manage:
        raise forbidden("only the workspace's creator, the room's host or moderators, or an admin may do this")
