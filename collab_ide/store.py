"""The durable form of a workspace's document in Postgres: a snapshot plus a log of updates.

- :meth:`DocumentLog.append` adds many documents' updates in one ``INSERT``, one row per document per
  batch holding its updates one after another (length-prefixed; the manager batches them by time and
  count: a statement, or even a row, per keystroke would dominate the cost of editing).
- :meth:`DocumentLog.load` is one round trip: the snapshot and every logged update, applied in order.
- :meth:`DocumentLog.compact` folds the log into the snapshot under a row lock, deleting exactly the
  rows it read, so an update another node commits meanwhile stays in the log for the next compaction.

Yjs updates are idempotent and commute, so overlap between the snapshot and the log is harmless.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map, Text, merge_updates

from collab_ide.protocol import EMPTY_UPDATE, join_var_bytes, split_var_bytes
from core_api.db import Connection, Pool

FILES = "files"


def starter_state(files: dict[str, str]) -> bytes:
    """The first snapshot of a new workspace: a ``files`` map of path → text."""
    doc: Doc[Any] = Doc()
    root = doc.get(FILES, type=Map)
    with doc.transaction():
        for path, content in files.items():
            root[path] = Text(content)
    return doc.get_update()


def files_of(doc: Doc[Any]) -> dict[str, str]:
    """The document's files as text, by path (entries that are not texts are left out)."""
    root = doc.get(FILES, type=Map)
    out: dict[str, str] = {}
    for path, value in root.items():
        if isinstance(value, Text):
            out[str(path)] = str(value)
    return dict(sorted(out.items()))


@dataclass
class Loaded:
    doc: Doc[Any]
    version: int
    log_rows: int
    stored_bytes: int = 0
    """The snapshot's and the log's bytes together (the document's state is no larger)."""


@dataclass
class Compacted:
    version: int
    folded: int
    news: bytes | None
    """Changes found in Postgres that the in-memory document lacked (another node's), as an update."""


class DocumentLog:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @staticmethod
    async def create(conn: Connection, workspace_id: uuid.UUID, state: bytes) -> None:
        """Store a new document's snapshot (in the caller's transaction)."""
        await conn.execute("INSERT INTO yjs_snapshots (workspace_id, state) VALUES ($1, $2)", workspace_id, state)

    async def load(self, workspace_id: uuid.UUID) -> Loaded | None:
        row = await self.pool.fetchrow(
            """SELECT s.state, s.version,
                      ARRAY(SELECT u.data FROM yjs_updates u WHERE u.workspace_id = s.workspace_id ORDER BY u.id) AS log
               FROM yjs_snapshots s WHERE s.workspace_id = $1""",
            workspace_id,
        )
        if row is None:
            return None
        doc: Doc[Any] = Doc()
        doc.get(FILES, type=Map)
        doc.apply_update(row["state"])
        logged = 0
        stored = len(row["state"])
        for data in row["log"]:
            stored += len(data)
            for update in split_var_bytes(data):
                doc.apply_update(update)
                logged += 1
        return Loaded(doc, row["version"], logged, stored)

    async def append(self, batches: list[tuple[uuid.UUID, list[bytes]]]) -> list[tuple[uuid.UUID, int]]:
        """Append each document's batch of updates as one log row; the (workspace id, row id) of each row."""
        if not batches:
            return []
        rows = await self.pool.fetch(
            "INSERT INTO yjs_updates (workspace_id, data) SELECT * FROM unnest($1::uuid[], $2::bytea[])"
            " RETURNING workspace_id, id",
            [workspace_id for workspace_id, _ in batches],
            [join_var_bytes(updates) for _, updates in batches],
        )
        return [(r[0], r[1]) for r in rows]

    async def compact(
        self,
        workspace_id: uuid.UUID,
        doc: Doc[Any],
        known_version: int,
        own_rows: Sequence[int] = (),
        encoded: Callable[[int], None] | None = None,
    ) -> Compacted | None:
        """Fold the log and the in-memory ``doc`` into a new snapshot; None if the workspace is gone.

        ``doc`` receives whatever Postgres holds that it lacks (written by another node), so it is the
        union of both afterwards; that difference is returned for the caller to pass on to its clients.
        ``own_rows`` are log rows written from ``doc`` itself: deleted without being read back.
        ``encoded`` is called with the new snapshot's length as soon as it is encoded (before anything
        else can change ``doc``).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            snap = await conn.fetchrow(
                "SELECT state, version FROM yjs_snapshots WHERE workspace_id = $1 FOR UPDATE", workspace_id
            )
            if snap is None:
                return None
            own = list(own_rows)
            if own:  # already in ``doc``: dropped by primary key, never read back
                await conn.execute("DELETE FROM yjs_updates WHERE id = ANY($1::bigint[])", own)
            rows = await conn.fetch(
                "SELECT id, data FROM yjs_updates WHERE workspace_id = $1 ORDER BY id", workspace_id
            )
            changes: list[bytes] = []
            subscription = doc.observe(lambda event: changes.append(event.update))
            try:
                if snap["version"] != known_version:
                    doc.apply_update(snap["state"])
                for r in rows:
                    for update in split_var_bytes(r["data"]):
                        doc.apply_update(update)
            finally:
                doc.unobserve(subscription)
            changes = [c for c in changes if c != EMPTY_UPDATE]
            news = merge_updates(*changes) if len(changes) > 1 else (changes[0] if changes else None)
            state = doc.get_update()
            if encoded is not None:
                encoded(len(state))
            version = await conn.fetchval(
                "UPDATE yjs_snapshots SET state = $2, version = version + 1, updated_at = now()"
                " WHERE workspace_id = $1 RETURNING version",
                workspace_id,
                state,
            )
            if rows:
                await conn.execute("DELETE FROM yjs_updates WHERE id = ANY($1::bigint[])", [r["id"] for r in rows])
        return Compacted(version, len(own) + len(rows), news)
