"""Workspace use cases: create from a template, list, read, manage members, read the current files.

Access rules are in :mod:`collab_ide.access`. The document itself lives in :mod:`collab_ide.documents`;
this module reads it through :meth:`DocumentManager.current_files`, the server's own copy of the files
(the hook a "Run" uses: it must never run a copy a client sends).
"""

from __future__ import annotations

import asyncio
import io
import uuid
import zipfile

from collab_ide.access import WORKSPACE_VIEW, Access, access_of, require_manage, visible_sql, workspace_row
from collab_ide.documents import DocumentManager
from collab_ide.schemas import (
    FileListOut,
    FileOut,
    MemberAccessIn,
    TemplateListOut,
    TemplateOut,
    WorkspaceIn,
    WorkspaceListQuery,
    WorkspaceMemberOut,
    WorkspaceOut,
    check_path,
)
from collab_ide.store import DocumentLog, starter_state
from collab_ide.templates import TEMPLATES
from core_api.context import Core, Page, PageQuery, audit, decode_cursor, new_id, page_of, rights_changed
from core_api.db import Connection, Record
from core_api.errors import AppError, ErrorCode, conflict, forbidden, not_found
from core_api.http import Principal
from core_api.settings import Settings
from rooms import service as rooms

EDITOR_PREFIX = "/yjs/"


def workspace_out(row: Record, access: Access) -> WorkspaceOut:
    return WorkspaceOut(
        id=row["id"],
        name=row["name"],
        language=row["language"],
        entry=row["entry"],
        room_id=row["room_id"],
        room_access=row["room_access"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        my_access="edit" if access.edit else "read",
        can_manage=access.manage,
        editor_path=f"{EDITOR_PREFIX}{row['id']}",
    )


def templates() -> TemplateListOut:
    return TemplateListOut(
        items=[TemplateOut(language=t.language, entry=t.entry, files=dict(t.files)) for t in TEMPLATES.values()]
    )


async def create_workspace(core: Core, user: Principal, body: WorkspaceIn) -> WorkspaceOut:
    """Create a workspace and its document with the starter files (written here, once, by the server)."""
    if body.room_id is not None:
        room = await rooms.get_room(core, user, body.room_id)
        if room.my_role is None and not user.is_admin:
            raise forbidden("join the room before opening a workspace in it")
        if room.archived_at is not None:
            raise conflict("the room is archived")
    template = TEMPLATES[body.language]
    files = dict(template.files) if body.files is None else dict(body.files)
    entry = body.entry or (template.entry if template.entry in files else next(iter(sorted(files)), template.entry))
    workspace_id = new_id()
    state = starter_state(files)
    _within_caps(core.settings, files, state)
    async with core.transaction() as tx:
        await tx.conn.execute(
            "INSERT INTO workspaces (id, name, language, entry, room_id, room_access, created_by)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            workspace_id,
            body.name,
            body.language,
            entry,
            body.room_id,
            body.room_access,
            user.id,
        )
        await DocumentLog.create(tx.conn, workspace_id, state)
        row, access = await workspace_row(tx.conn, user, workspace_id)
    return workspace_out(row, access)


def _within_caps(settings: Settings, files: dict[str, str], state: bytes) -> None:
    """Starter files obey the caps editing obeys (``payload_too_large`` otherwise)."""
    for path, content in files.items():
        if len(content.encode()) > settings.collab_max_file_bytes:
            raise AppError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"files.{path}: larger than the limit of {settings.collab_max_file_bytes} bytes per file",
                {"limit_bytes": settings.collab_max_file_bytes},
            )
    if len(state) > settings.collab_max_document_bytes:
        raise AppError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"the files are larger than the limit of {settings.collab_max_document_bytes} bytes per workspace",
            {"limit_bytes": settings.collab_max_document_bytes},
        )


async def get_workspace(core: Core, user: Principal, workspace_id: uuid.UUID) -> WorkspaceOut:
    row, access = await workspace_row(core.pool, user, workspace_id)
    return workspace_out(row, access)


async def list_workspaces(core: Core, user: Principal, query: WorkspaceListQuery) -> Page[WorkspaceOut]:
    at, ident = decode_cursor(query.cursor)
    rows = await core.pool.fetch(
        f"""SELECT {WORKSPACE_VIEW}
            WHERE ($2::timestamptz IS NULL OR (w.created_at, w.id) > ($2, $3))
              AND ($5::uuid IS NULL OR w.room_id = $5)
              AND {visible_sql("$1", "$6")}
            ORDER BY w.created_at, w.id LIMIT $4""",
        user.id,
        at,
        ident,
        query.limit + 1,
        query.room_id,
        user.is_admin,
    )

    def convert(row: Record) -> WorkspaceOut:
        access = access_of(row, user)
        assert access is not None  # the WHERE clause keeps only visible rows
        return workspace_out(row, access)

    return page_of(rows, query.limit, convert)


# --- members -------------------------------------------------------------------------------------

_MEMBER_COLUMNS = "m.user_id, u.display_name, m.access, m.added_at"


def member_out(r: Record) -> WorkspaceMemberOut:
    return WorkspaceMemberOut(
        user_id=r["user_id"], display_name=r["display_name"], access=r["access"], added_at=r["added_at"]
    )


async def list_members(
    core: Core, user: Principal, workspace_id: uuid.UUID, query: PageQuery
) -> Page[WorkspaceMemberOut]:
    """Users given explicit access (room members and the creator have theirs implicitly)."""
    at, ident = decode_cursor(query.cursor)
    async with core.pool.acquire() as conn:
        await workspace_row(conn, user, workspace_id)
        rows = await conn.fetch(
            f"""SELECT {_MEMBER_COLUMNS}, m.added_at AS created_at, m.user_id AS id
                FROM workspace_members m JOIN users u ON u.id = m.user_id
                WHERE m.workspace_id = $1 AND ($2::timestamptz IS NULL OR (m.added_at, m.user_id) > ($2, $3))
                ORDER BY m.added_at, m.user_id LIMIT $4""",
            workspace_id,
            at,
            ident,
            query.limit + 1,
        )
    return page_of(rows, query.limit, member_out)


async def _member(conn: Connection, workspace_id: uuid.UUID, user_id: uuid.UUID) -> WorkspaceMemberOut:
    row = await conn.fetchrow(
        f"SELECT {_MEMBER_COLUMNS} FROM workspace_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.workspace_id = $1 AND m.user_id = $2",
        workspace_id,
        user_id,
    )
    if row is None:
        raise not_found("member")
    return member_out(row)


async def set_member(
    core: Core,
    docs: DocumentManager,
    user: Principal,
    workspace_id: uuid.UUID,
    user_id: uuid.UUID,
    body: MemberAccessIn,
) -> WorkspaceMemberOut:
    """Give a user ``edit`` or ``read`` access (managers only); their open connections follow at once."""
    async with core.transaction() as tx:
        _, access = await workspace_row(tx.conn, user, workspace_id)
        require_manage(access)
        if not await tx.conn.fetchval("SELECT 1 FROM users WHERE id = $1", user_id):
            raise not_found("user")
        await tx.conn.execute(
            """INSERT INTO workspace_members (workspace_id, user_id, access, added_by) VALUES ($1, $2, $3, $4)
               ON CONFLICT (workspace_id, user_id) DO UPDATE SET access = EXCLUDED.access""",
            workspace_id,
            user_id,
            body.access,
            user.id,
        )
        await audit(
            tx, user.id, "workspace.access", "workspace", workspace_id, user_id=str(user_id), access=body.access
        )
        member = await _member(tx.conn, workspace_id, user_id)
    await docs.access_changed(workspace_id, user_id)
    return member


async def remove_member(
    core: Core, docs: DocumentManager, user: Principal, workspace_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    """Take a user's explicit access away (managers only); what a room gives them remains."""
    async with core.transaction() as tx:
        _, access = await workspace_row(tx.conn, user, workspace_id)
        require_manage(access)
        deleted = await tx.conn.fetchval(
            "DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2 RETURNING user_id",
            workspace_id,
            user_id,
        )
        if deleted is None:
            raise not_found("member")
        await audit(tx, user.id, "workspace.access", "workspace", workspace_id, user_id=str(user_id), access=None)
        rights_changed(tx, user_id)  # their connections stop following the workspace's runs (collab_ide.follow)
    await docs.access_changed(workspace_id, user_id)


# --- files ---------------------------------------------------------------------------------------


async def current_files(core: Core, docs: DocumentManager, user: Principal, workspace_id: uuid.UUID) -> dict[str, str]:
    """The workspace's files now, for ``user`` (who must see it): what downloads and runs read.

    Editors can put any key into the ``files`` map; only safe relative paths (as the REST API accepts
    them) count as files, so an archive or a sandbox never writes outside its directory.
    """
    await workspace_row(core.pool, user, workspace_id)
    return await files_now(docs, workspace_id)


async def files_now(docs: DocumentManager, workspace_id: uuid.UUID) -> dict[str, str]:
    """:func:`current_files` for a caller that has already checked access."""
    files = await docs.current_files(workspace_id)
    if files is None:
        raise not_found("workspace")
    return {path: content for path, content in files.items() if _safe_path(path)}


def _safe_path(path: str) -> bool:
    try:
        check_path(path)
    except ValueError:
        return False
    return True


async def list_files(core: Core, docs: DocumentManager, user: Principal, workspace_id: uuid.UUID) -> FileListOut:
    files = await current_files(core, docs, user, workspace_id)
    return FileListOut(items=[FileOut(path=p, size=len(c.encode())) for p, c in files.items()])


async def archive(core: Core, docs: DocumentManager, user: Principal, workspace_id: uuid.UUID) -> bytes:
    """The current files as a zip archive (paths as in the document), compressed in a worker thread so
    that the event loop keeps serving everyone else meanwhile (zlib lets go of the GIL)."""
    files = await current_files(core, docs, user, workspace_id)
    return await asyncio.to_thread(zip_files, files)


def zip_files(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, content in files.items():
            zf.writestr(path, content)
    return buffer.getvalue()
