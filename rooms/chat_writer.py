"""Group commit of ``chat:send``: one writer per node commits the sends of the last few milliseconds together.

Each send used to commit on its own, and a commit is a WAL flush: one that waits 150-700 ms on a slow
fsync queued every send behind it. The writer takes the sends waiting when it is free (after waiting up to
``STUDYHALL_CHAT_GROUP_COMMIT_WAIT_S`` for more, at most ``STUDYHALL_CHAT_GROUP_COMMIT_MAX`` at a time) and
stores them in one transaction: one flush for all of them. Each sender's ``chat:send`` still answers only
after the commit that stored its message (``post`` returns then), and broadcasts after it, as before.

What every send keeps:

- **Each message alone.** Every message is stored by the same function as before (``chat_post``:
  membership, the room's next ``seq``, mute, rate limit, slow mode, idempotency by ``client_msg_id``). A
  batch is first stored straight: one statement calling ``chat_post`` for each message in order
  (``chat_store.post_many``), one round trip for the whole batch. If one message is refused, or fails (a
  constraint), that statement fails whole (nothing stored) and the batch is stored again with each message
  in a savepoint of its own: the failing ones are rolled back to their savepoints and fail alone; the
  others commit.
- **Gap-free seq.** A message's claim on its room's counter is rolled back with its savepoint, so the
  numbers stay 1, 2, 3, ... per room.
- **Order.** Each room belongs to one of the writer's ``STUDYHALL_CHAT_GROUP_COMMIT_LANES`` lanes, which
  commits one batch at a time, and a batch stores its messages in the order they came within each room, so
  one sender's messages to a room get increasing seqs in the order sent. The rooms of a batch are locked in
  one order (by id), so batches (of two lanes, or two nodes) cannot deadlock on them.
- **A batch of one** is committed as a lone send was (one round trip).

A failure of the whole transaction (the connection lost, the commit refused) fails every send of the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg

from core_api.context import Core, Tx, notify
from core_api.db import Connection, Record
from core_api.http import Principal
from rooms import chat_core as rules
from rooms import chat_store as store

log = logging.getLogger(__name__)

WRITER = "rooms.chat_writer"
"""Session key of the node's :class:`ChatWriter` (absent: each send commits on its own)."""
_SAVEPOINT = "chat_send"


@dataclass
class Send:
    """One ``chat:send`` waiting for its batch."""

    room_id: uuid.UUID
    author: Principal
    client_msg_id: str
    body: str
    pace: store.Pace
    done: asyncio.Future[Record] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class _Lane:
    """One queue of sends and the task that commits it, a batch at a time."""

    def __init__(self) -> None:
        self.queue: list[Send] = []
        self.arrived = asyncio.Event()
        self.full = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class ChatWriter:
    """The node's chat writer: :meth:`post` a message, get it back once committed (or its refusal).

    ``lanes`` writers commit side by side, each room always in the same lane (so one room's messages are
    stored one batch after another, in the order they came); each lane uses one database connection while
    it commits.
    """

    def __init__(self, core: Core, max_batch: int, max_wait_s: float, lanes: int = 1) -> None:
        self.core = core
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batches = 0
        self.messages = 0
        self.redone = 0
        """Batches stored a second time, message by message in savepoints, because one was refused."""
        self._lanes = [_Lane() for _ in range(max(1, lanes))]
        self.lanes = len(self._lanes)
        self._running = False
        self._closed = False

    def start(self) -> None:
        for lane in self._lanes:
            lane.task = asyncio.create_task(self._run(lane))
        self._running = True

    async def close(self) -> None:
        """Commit what is waiting, then stop."""
        self._closed = True
        for lane in self._lanes:
            lane.arrived.set()
            lane.full.set()
        for lane in self._lanes:
            if lane.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
                lane.task = None

    async def post(
        self, room_id: uuid.UUID, author: Principal, client_msg_id: str, body: str, pace: store.Pace
    ) -> Record:
        """Store one message (as :func:`rooms.chat_store.post`), committed when this returns; raises
        :class:`rooms.chat_store.PostRefused` (nothing stored) like it."""
        if self._closed or not self._running:
            raise RuntimeError("the chat writer is not running")
        send = Send(room_id, author, client_msg_id, body, pace)
        lane = self._lanes[room_id.int % len(self._lanes)]
        lane.queue.append(send)
        lane.arrived.set()
        if len(lane.queue) >= self.max_batch:
            lane.full.set()
        return await send.done

    async def _run(self, lane: _Lane) -> None:
        while True:
            await lane.arrived.wait()
            if not lane.queue:
                if self._closed:
                    return
                lane.arrived.clear()
                continue
            if self.max_wait_s > 0 and len(lane.queue) < self.max_batch and not self._closed:
                # Give the sends of the next few milliseconds a seat in this commit.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.full.wait(), self.max_wait_s)
            batch, lane.queue = lane.queue[: self.max_batch], lane.queue[self.max_batch :]
            if len(lane.queue) < self.max_batch:
                lane.full.clear()
            try:
                await self._commit(batch)
            except Exception as exc:  # the whole transaction failed: every sender of the batch hears it
                log.exception("a chat batch of %d messages could not be committed", len(batch))
                for send in batch:
                    if not send.done.done():
                        send.done.set_exception(exc)

    async def _commit(self, batch: list[Send]) -> None:
        self.batches += 1
        self.messages += len(batch)
        if len(batch) == 1:
            await _commit_one(self.core, batch[0])
            return
        # Rooms in one order (their ids), each room's messages in the order they came: no deadlock between
        # two nodes' batches, and each sender's messages to a room get seqs in the order sent.
        ordered = sorted(batch, key=lambda s: s.room_id.bytes)
        async with self.core.pool.acquire() as conn:
            try:
                # Most batches have no refusal: stored straight, one round trip a message.
                outcomes = await _store(conn, ordered, isolate=False)
            except _Refused:
                # One was refused: the transaction is gone, nothing was stored. Again, each message in a
                # savepoint of its own (a second round trip each), so that the refused ones fail alone.
                self.redone += 1
                outcomes = await _store(conn, ordered, isolate=True)
        # Committed.
        for _, _, stored in outcomes:
            if stored is not None:
                for topic, payload, every_node in stored.events:
                    await self.core.bus.publish(topic, payload, every_node=every_node)
        for send, outcome, _ in outcomes:
            if send.done.done():
                continue
            if isinstance(outcome, BaseException):
                send.done.set_exception(outcome)
            else:
                send.done.set_result(outcome)


class _Refused(Exception):
    """A message of a batch stored without savepoints failed: the batch is stored again, with them."""


_Outcome = tuple[Send, Record | BaseException, Tx | None]


async def _store(conn: Connection, batch: list[Send], *, isolate: bool) -> list[_Outcome]:
    """Store ``batch`` in one transaction, committed when this returns.

    Straight (not ``isolate``): every message in one statement, one round trip (a batch's round trips one
    after another would each wait for a turn of this node's busy event loop); with mentions, their
    notifications in the same transaction. The first failure fails it all (``_Refused``, nothing stored).
    ``isolate``: each message in a savepoint of its own, a failing one rolled back alone.
    """
    if not isolate:
        items = [store.PostItem(s.room_id, s.author.id, s.client_msg_id, s.body, s.pace) for s in batch]
        mentions = any(rules.parse_mentions(s.body) for s in batch)
        try:
            if not mentions:  # one statement, its own transaction: one round trip in all
                rows = await store.post_many(conn, items)
                return [(send, row, None) for send, row in zip(batch, rows, strict=True)]
            async with conn.transaction():
                rows = await store.post_many(conn, items)
                straight: list[_Outcome] = []
                for send, row in zip(batch, rows, strict=True):
                    tx = Tx(conn)
                    if row["fresh"]:
                        await notify_mentions(tx, send.author, row)
                    straight.append((send, row, tx))
                return straight
        except asyncpg.PostgresError as exc:
            raise _Refused() from exc
    outcomes: list[_Outcome] = []
    async with conn.transaction():
        await conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        for send in batch:
            tx = Tx(conn)
            try:
                row = await store.post(conn, send.room_id, send.author.id, send.client_msg_id, send.body, send.pace)
                if row["fresh"]:
                    await notify_mentions(tx, send.author, row)
            except (store.PostRefused, asyncpg.PostgresError) as exc:
                # This message alone: back to before it (its seq given back), the others stand.
                await conn.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                outcomes.append((send, exc, None))
                continue
            await conn.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}; SAVEPOINT {_SAVEPOINT}")
            outcomes.append((send, row, tx))
    return outcomes


async def _commit_one(core: Core, send: Send) -> None:
    """A lone send, committed as before the writer: one round trip (mentions: with their notifications)."""
    try:
        row = await post_now(core, send.room_id, send.author, send.client_msg_id, send.body, send.pace)
    except (store.PostRefused, asyncpg.PostgresError) as exc:
        send.done.set_exception(exc)
        return
    send.done.set_result(row)


async def post_now(
    core: Core, room_id: uuid.UUID, author: Principal, client_msg_id: str, body: str, pace: store.Pace
) -> Record:
    """Store one message in a commit of its own (no writer, or a batch of one)."""
    async with core.pool.acquire() as conn:
        if not rules.parse_mentions(body):
            return await store.post(conn, room_id, author.id, client_msg_id, body, pace)
        async with core.transaction(conn) as tx:
            row = await store.post(tx.conn, room_id, author.id, client_msg_id, body, pace)
            if row["fresh"]:
                await notify_mentions(tx, author, row)
            return row


async def notify_mentions(tx: Tx, author: Principal, row: Record) -> None:
    """Each member an @mention names gets a ``chat_mention`` notification (stored in ``tx``)."""
    keys = rules.parse_mentions(row["body"])
    if not keys:
        return
    payload = {
        "room_id": str(row["room_id"]),
        "message_id": str(row["id"]),
        "seq": row["seq"],
        "by": {"id": str(author.id), "display_name": author.display_name},
        "excerpt": rules.excerpt(row["body"]),
    }
    conn: Connection = tx.conn
    for user_id in await store.mentioned_members(conn, row["room_id"], keys, author.id):
        await notify(tx, user_id, "chat_mention", payload)


def writer_of(session: Mapping[str, Any]) -> ChatWriter | None:
    return cast(ChatWriter | None, session.get(WRITER))
