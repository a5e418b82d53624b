"""What every service needs: the pool, settings, the event bus, and the transaction helper.

Services change state inside :meth:`Core.transaction`; events they queue with ``tx.publish`` go out on
the bus only after the transaction commits (and are dropped if it rolls back), so nobody is ever told
about a change that did not happen.

Most events are this node's business: the realtime layer turns them into Socket.IO emits, which reach
every node by themselves. An event published with ``every_node=True`` is delivered to the subscribers of
every node instead (through the bus's :class:`Relay`, Redis pub/sub in scaled mode): that is how a
change of someone's rights reaches the connections they hold open on other nodes (:func:`rights_changed`).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, Generic, Protocol, TypeVar

from aiohttp import web
from pydantic import AfterValidator, BaseModel, Field

from core_api.db import Connection, Pool, Record
from core_api.errors import invalid
from core_api.http import Call, Query
from core_api.media_urls import PlaybackSigner
from core_api.settings import Settings
from core_api.timestamps import check_timestamp

log = logging.getLogger(__name__)

Subscriber = Callable[[str, dict[str, Any]], Awaitable[None]]

RIGHTS_PREFIX = "rights:"
"""Topic ``rights:<user id>`` (every node): the user's role, memberships, bans or account changed."""
ROOM_RIGHTS_PREFIX = "rights:room:"
"""Topic ``rights:room:<room id>`` (every node): what every member may do in the room changed (archived)."""
RESYNC_TOPIC = "bus:resync"
"""Told to this node's subscribers when every-node events may have been lost (the relay reconnected)."""


class Relay(Protocol):
    """Carries every-node events to the other nodes, whose relays deliver them to their own bus."""

    async def send(self, topic: str, payload: dict[str, Any]) -> None: ...


class Bus:
    """Publish/subscribe of domain events; the realtime layer subscribes to push them out.

    ``relay`` (set by the app when scaled) carries ``every_node`` events to the other nodes; without one
    this node is the only one and they are delivered here alone.
    """

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self.relay: Relay | None = None

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    async def publish(self, topic: str, payload: dict[str, Any], *, every_node: bool = False) -> None:
        if every_node and self.relay is not None:
            try:
                await self.relay.send(topic, payload)
            except Exception:  # the change is committed: this node still acts on it
                log.exception("could not relay %s to the other nodes", topic)
        await self.deliver(topic, payload)

    async def deliver(self, topic: str, payload: dict[str, Any]) -> None:
        """Hand an event to this node's subscribers (the relay calls this for other nodes' events)."""
        for callback in self._subscribers:
            try:
                await callback(topic, payload)
            except Exception:
                log.exception("event subscriber failed on %s", topic)


@dataclass
class Tx:
    """An open transaction and the events to publish once it commits."""

    conn: Connection
    events: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    mails: list[tuple[str, str, str]] = field(default_factory=list)  # (to, subject, text), sent after commit

    def publish(self, topic: str, payload: dict[str, Any], *, every_node: bool = False) -> None:
        self.events.append((topic, payload, every_node))

    def mail(self, to: str, subject: str, text: str) -> None:
        """Send an email once the transaction commits (in the background; nothing if it rolls back)."""
        self.mails.append((to, subject, text))


@dataclass
class Core:
    settings: Settings
    pool: Pool
    bus: Bus
    mailer: Any = None  # core_api.mail.Mailer: what Tx.mail hands its messages to after commit

    @cached_property
    def playback(self) -> PlaybackSigner:
        """Signs and checks the playback URLs of the HLS ladders this server serves (core_api/media_urls.py)."""
        return PlaybackSigner(self.settings)

    @asynccontextmanager
    async def transaction(self, conn: Connection | None = None) -> AsyncIterator[Tx]:
        """A transaction on a pool connection, or on ``conn`` (one the caller already holds); the
        events published in it go out after it commits."""
        async with AsyncExitStack() as stack:
            held: Connection = conn if conn is not None else await stack.enter_async_context(self.pool.acquire())
            await stack.enter_async_context(held.transaction())
            tx = Tx(held)
            yield tx
        for topic, payload, every_node in tx.events:
            await self.bus.publish(topic, payload, every_node=every_node)
        if tx.mails and self.mailer is not None:
            for to, subject, text in tx.mails:
                self.mailer.send_later(to, subject, text)


CORE = web.AppKey("core", Core)


def core_of(call: Call) -> Core:
    return call.request.app[CORE]


def new_id() -> uuid.UUID:
    return uuid.uuid4()


# --- pagination ----------------------------------------------------------------------------------

T = TypeVar("T")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


SearchText = Annotated[str, AfterValidator(_no_nul)]
"""Text a client searches by, in a query string (Postgres text cannot hold NUL; set the lengths with Field)."""


class PageQuery(Query):
    limit: int = Field(50, ge=1, le=200, description="Most items to return.")
    cursor: str | None = Field(None, max_length=200, description="`next_cursor` of the previous page.")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


def encode_cursor(at: datetime, ident: uuid.UUID | str) -> str:
    raw = json.dumps([at.isoformat(), str(ident)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime | None, uuid.UUID | None]:
    """Split a cursor into the (time, id) keyset position; ``(None, None)`` for the first page."""
    if cursor is None:
        return None, None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, ident = json.loads(base64.urlsafe_b64decode(padded.encode()))
        # A cursor comes back from the client: its time is checked like any other (core_api.timestamps).
        return check_timestamp(datetime.fromisoformat(at)), uuid.UUID(ident)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise invalid("cursor is not one this server issued") from None


def page_of(
    rows: list[Record],
    limit: int,
    convert: Callable[[Record], T],
    time_key: str = "created_at",
    id_key: str = "id",
) -> Page[T]:
    """Turn ``limit + 1`` fetched rows into a page and the cursor after its last item."""
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1][time_key], rows[-1][id_key]) if more and rows else None
    return Page[T](items=[convert(r) for r in rows], next_cursor=cursor)


# --- audit and notifications ---------------------------------------------------------------------


async def audit(
    tx: Tx, actor_id: uuid.UUID | None, action: str, target_kind: str, target_id: Any, **details: Any
) -> None:
    """Record a privileged action in the audit log, in the caller's transaction."""
    await tx.conn.execute(
        "INSERT INTO audit_log (id, actor_id, action, target_kind, target_id, details) VALUES ($1, $2, $3, $4, $5, $6)",
        new_id(),
        actor_id,
        action,
        target_kind,
        str(target_id),
        details,
    )


def rights_topic(user_id: uuid.UUID | str) -> str:
    return f"{RIGHTS_PREFIX}{user_id}"


def rights_changed(tx: Tx, *user_ids: uuid.UUID) -> None:
    """After commit, tell every node that these users' rights changed (role, membership, ban, account):
    their open connections re-read what they may do, and lose what they no longer may."""
    for user_id in dict.fromkeys(user_ids):
        tx.publish(rights_topic(user_id), {"user_id": str(user_id)}, every_node=True)


def room_rights_changed(tx: Tx, room_id: uuid.UUID) -> None:
    """After commit, tell every node that what anyone may do in the room changed (it was archived):
    open connections to its workspaces re-read their access."""
    tx.publish(f"{ROOM_RIGHTS_PREFIX}{room_id}", {"room_id": str(room_id)}, every_node=True)


async def publish_rights_changed(core: Core, *user_ids: uuid.UUID) -> None:
    """:func:`rights_changed` for a change already committed (published at once)."""
    for user_id in dict.fromkeys(user_ids):
        await core.bus.publish(rights_topic(user_id), {"user_id": str(user_id)}, every_node=True)


async def notify(tx: Tx, user_id: uuid.UUID, kind: str, payload: dict[str, Any]) -> None:
    """Store a notification and, after commit, publish it for live delivery to the user."""
    row = await tx.conn.fetchrow(
        "INSERT INTO notifications (id, user_id, kind, payload) VALUES ($1, $2, $3, $4)"
        " RETURNING id, user_id, kind, payload, created_at, read_at",
        new_id(),
        user_id,
        kind,
        payload,
    )
    assert row is not None
    tx.publish(
        f"user:{user_id}",
        {
            "type": "notification",
            "notification": {
                "id": str(row["id"]),
                "kind": kind,
                "payload": payload,
                "created_at": row["created_at"].isoformat(),
                "read_at": None,
            },
        },
    )


async def notify_many(tx: Tx, user_ids: list[uuid.UUID], kind: str, payload: dict[str, Any]) -> int:
    """:func:`notify` for many users: one notification each, stored in one statement, each published after
    commit; returns how many were stored."""
    if not user_ids:
        return 0
    rows = await tx.conn.fetch(
        "INSERT INTO notifications (id, user_id, kind, payload)"
        " SELECT gen_random_uuid(), u, $2, $3 FROM unnest($1::uuid[]) AS u RETURNING id, user_id, created_at",
        user_ids,
        kind,
        payload,
    )
    for row in rows:
        note = {"id": str(row["id"]), "kind": kind, "payload": payload,
                "created_at": row["created_at"].isoformat(), "read_at": None}  # fmt: skip
        tx.publish(f"user:{row['user_id']}", {"type": "notification", "notification": note})
    return len(rows)
