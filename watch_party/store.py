"""Watch parties' SQL: the one row per room that holds the authoritative state, and the room facts it needs.

The state is one JSON document per room (``watch_parties.state``). Every change happens in a transaction
that first locks the row (:func:`lock_state`), so commands from any number of nodes are applied one at
a time, each to the state the previous one left.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection

from core_api.db import Connection
from watch_party.codec import from_document, to_document
from watch_party.core import Person, Viewer, WatchState

_SELECT = "SELECT state FROM watch_parties WHERE room_id = $1"


async def read_state(conn: Connection, room_id: uuid.UUID) -> WatchState | None:
    doc = await conn.fetchval(_SELECT, room_id)
    return from_document(str(room_id), doc) if doc is not None else None


async def lock_state(conn: Connection, room_id: uuid.UUID) -> WatchState:
    """The room's state, locked until the transaction ends; a new party (led by the room's host) if none."""
    doc = await conn.fetchval(_SELECT + " FOR UPDATE", room_id)
    if doc is None:
        fresh = WatchState(room_id=str(room_id), leader=await room_host(conn, room_id))
        await conn.execute(
            "INSERT INTO watch_parties (room_id, state) VALUES ($1, $2) ON CONFLICT (room_id) DO NOTHING",
            room_id,
            to_document(fresh),
        )
        doc = await conn.fetchval(_SELECT + " FOR UPDATE", room_id)
    return from_document(str(room_id), doc)


async def save_state(conn: Connection, state: WatchState) -> None:
    await conn.execute(
        "UPDATE watch_parties SET state = $2, updated_at = now() WHERE room_id = $1",
        uuid.UUID(state.room_id),
        to_document(state),
    )


async def room_host(conn: Connection, room_id: uuid.UUID) -> Person | None:
    row = await conn.fetchrow(
        "SELECT u.id, u.display_name FROM room_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.room_id = $1 AND m.role = 'host' AND m.banned_at IS NULL",
        room_id,
    )
    return Person(str(row["id"]), row["display_name"]) if row is not None else None


async def viewers(conn: Connection, room_id: uuid.UUID, user_ids: Collection[str]) -> list[Viewer]:
    """The given users as present viewers: their room roles and since when they are members."""
    if not user_ids:
        return []
    rows = await conn.fetch(
        "SELECT u.id, u.display_name, m.role, m.joined_at FROM room_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.room_id = $1 AND m.user_id = ANY($2::uuid[]) AND m.banned_at IS NULL",
        room_id,
        [uuid.UUID(u) for u in user_ids],
    )
    return [Viewer(Person(str(r["id"]), r["display_name"]), r["role"], r["joined_at"].timestamp()) for r in rows]
