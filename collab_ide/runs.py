"""A workspace's "Run": the server's current copy of the files, executed in the sandbox.

A run is an execution (``core_api.executions``: the same queue, per-user limit, in-process pool or Celery
workers, stored result) plus a ``workspace_runs`` row saying which workspace and entry it was. The files
are read from the server's copy of the document (loaded on this node, else from Postgres), never taken
from the client. When the program ends, wherever it ran, the room of the workspace hears ``run:output``
(one event per non-empty stream: ``compile``, ``stdout``, ``stderr``) and then ``run:finished`` with the
whole execution (``core_api.executions._publish_workspace_run``); a workspace outside any room sends them
to the personal room of whoever started the run. Both also go to the workspace's run channel, which the
members who have it open follow (``run:follow``, :mod:`collab_ide.follow`).
The history of runs stays with the workspace.
An ``interactive`` run reads what members type while it runs (``run:input``, :mod:`collab_ide.console`).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from collab_ide.access import workspace_row
from collab_ide.documents import DocumentManager
from collab_ide.follow import run_channel
from collab_ide.service import files_now
from core_api.context import Core, Page, PageQuery, decode_cursor, new_id, page_of
from core_api.db import Connection, Record
from core_api.errors import forbidden, invalid, not_found
from core_api.executions import EXECUTION_COLUMNS, ExecutionIn, ExecutionOut, Executions, execution_out
from core_api.http import Input, Principal
from sandbox.models import MAX_STDIN_CHARS, SourceFile


class RunIn(Input):
    entry: str | None = Field(None, max_length=255, description="The file to run (default: the workspace's entry).")
    language: str | None = Field(None, max_length=32, description="Default: the workspace's language.")
    stdin: str = Field("", max_length=MAX_STDIN_CHARS, description="Standard input of the run.")
    interactive: bool = Field(
        False,
        description="Keep stdin open after `stdin`, like a console: `run:input` events type into the running "
        "program until one says `eof` (or the program ends).",
    )


class RunOut(BaseModel):
    id: uuid.UUID
    workspace_id: uuid.UUID
    entry: str
    user_id: uuid.UUID
    created_at: datetime
    execution: ExecutionOut = Field(description="The execution: state, status, output, times, memory.")


_RUN_SELECT = f"""SELECT r.id AS run_id, r.workspace_id, r.entry, r.user_id AS run_user_id, r.created_at AS run_at,
        {", ".join("e." + c for c in EXECUTION_COLUMNS.split(", "))}
    FROM workspace_runs r JOIN executions e ON e.id = r.execution_id"""


def run_out(row: Record) -> RunOut:
    return RunOut(
        id=row["run_id"],
        workspace_id=row["workspace_id"],
        entry=row["entry"],
        user_id=row["run_user_id"],
        created_at=row["run_at"],
        execution=execution_out(row),
    )


async def start_run(
    core: Core,
    docs: DocumentManager,
    executions: Executions,
    user: Principal,
    workspace_id: uuid.UUID,
    body: RunIn,
    wait: bool,
) -> RunOut:
    """Run the workspace's current files (with ``wait``, answer once finished or after the wait timeout)."""
    row, access = await workspace_row(core.pool, user, workspace_id)
    if not access.edit:
        raise forbidden("running a workspace's code needs edit access to it")
    files = await files_now(docs, workspace_id)
    entry = body.entry or row["entry"]
    if entry not in files:
        raise invalid(f"entry: the workspace has no file {entry!r}")
    run_id = new_id()

    async def link(conn: Connection, execution_id: uuid.UUID) -> None:
        await conn.execute(
            "INSERT INTO workspace_runs (id, workspace_id, execution_id, user_id, entry) VALUES ($1, $2, $3, $4, $5)",
            run_id,
            workspace_id,
            execution_id,
            user.id,
            entry,
        )

    try:
        request = ExecutionIn(
            language=body.language or row["language"],
            files=[SourceFile(path=path, content=content) for path, content in sorted(files.items())],
            stdin=body.stdin,
            entry=entry,
        )
    except ValueError as exc:
        raise invalid(f"the workspace cannot be run as it is: {exc}") from None
    # The job carries where its live output goes: the workspace's room, or the runner's own, and the
    # workspace's run channel, which every member who has it open follows (collab_ide.follow).
    topic = f"room:{row['room_id']}" if row["room_id"] is not None else f"user:{user.id}"
    live = {
        "run_id": str(run_id),
        "workspace_id": str(workspace_id),
        "run_topic": topic,
        "run_channel": run_channel(workspace_id),
        "run_entry": entry,
    }
    await executions.create(user, request, wait=wait, link=link, context=live, interactive=body.interactive)
    return await _run(core, workspace_id, run_id)


async def get_run(core: Core, user: Principal, workspace_id: uuid.UUID, run_id: uuid.UUID) -> RunOut:
    await workspace_row(core.pool, user, workspace_id)
    return await _run(core, workspace_id, run_id)


async def _run(core: Core, workspace_id: uuid.UUID, run_id: uuid.UUID) -> RunOut:
    row = await core.pool.fetchrow(f"{_RUN_SELECT} WHERE r.workspace_id = $1 AND r.id = $2", workspace_id, run_id)
    if row is None:
        raise not_found("run")
    return run_out(row)


async def list_runs(core: Core, user: Principal, workspace_id: uuid.UUID, query: PageQuery) -> Page[RunOut]:
    """The workspace's runs, newest first."""
    await workspace_row(core.pool, user, workspace_id)
    at, ident = decode_cursor(query.cursor)
    rows = await core.pool.fetch(
        f"""{_RUN_SELECT}
            WHERE r.workspace_id = $1 AND ($2::timestamptz IS NULL OR (r.created_at, r.id) < ($2, $3))
            ORDER BY r.created_at DESC, r.id DESC LIMIT $4""",
        workspace_id,
        at,
        ident,
        query.limit + 1,
    )
    return page_of(rows, query.limit, run_out, time_key="run_at", id_key="run_id")
