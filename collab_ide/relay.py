"""How nodes holding the same document reach each other: nothing on one node, Redis pub/sub when scaled.

Every node that has a workspace's document loaded subscribes to ``studyhall:yjs:<workspace id>``. A
message there is ``<node id (12 bytes)><op (1 byte)><body>``:

- ``FRAMES``: y-websocket frames (updates and awareness), each length-prefixed: receivers apply them and
  forward the same bytes to their clients. Frames published in the same event-loop turn (a burst of
  keystrokes) travel in one message, sent through one pipelined round trip.
- ``ACCESS``: a user's access to the workspace changed (body: the user's 16-byte id); nodes re-check
  that user's connections.
- ``HELLO``: a node that has just loaded the document sends its state vector; nodes holding it answer
  with ``FRAMES`` carrying what the newcomer lacks and their clients' awareness. This also covers the
  updates another node has applied but not yet written to Postgres (they are batched).

The updates a node receives from its own clients are logged by that node only; a relayed update is
applied in memory and reaches Postgres at the receiver's next compaction too (see
:class:`collab_ide.documents.DocumentManager`), so a node that dies before its batch is written loses
nothing that another node or a client still holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from collab_ide.protocol import ProtocolError, join_var_bytes

log = logging.getLogger(__name__)

OP_FRAMES = 0
OP_HELLO = 1
OP_ACCESS = 2
OP_RESYNC = -1
"""Not on the wire: told to the local manager after a lost subscription came back, to say HELLO again."""
CHANNEL_PREFIX = "studyhall:yjs:"
Deliver = Callable[[uuid.UUID, int, bytes], None]
"""Called with (workspace id, op, body) for every message from another node."""


class Relay(Protocol):
    async def start(self, deliver: Deliver) -> None: ...

    async def join(self, workspace_id: uuid.UUID) -> None:
        """Subscribe; messages published after this returns are delivered."""
        ...

    async def leave(self, workspace_id: uuid.UUID) -> None: ...

    def publish(self, workspace_id: uuid.UUID, frame: bytes) -> None:
        """Send a frame to the other nodes soon (coalesced with others of the same loop turn)."""
        ...

    def hello(self, workspace_id: uuid.UUID, state_vector: bytes) -> None: ...

    def access(self, workspace_id: uuid.UUID, user_id: uuid.UUID) -> None: ...

    async def close(self) -> None: ...


class LocalRelay:
    """A single node: there is nobody to tell."""

    enabled = False

    async def start(self, deliver: Deliver) -> None:
        return None

    async def join(self, workspace_id: uuid.UUID) -> None:
        return None

    async def leave(self, workspace_id: uuid.UUID) -> None:
        return None

    def publish(self, workspace_id: uuid.UUID, frame: bytes) -> None:
        return None

    def hello(self, workspace_id: uuid.UUID, state_vector: bytes) -> None:
        return None

    def access(self, workspace_id: uuid.UUID, user_id: uuid.UUID) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisRelay:
    """Redis pub/sub between nodes (one subscriber connection and one publishing connection per node).

    Args:
        url: the Redis URL (``STUDYHALL_REDIS_URL``).
        node_id: this node's id; a node ignores its own messages.
    """

    enabled = True

    def __init__(self, url: str, node_id: str) -> None:
        self.node = node_id.encode()[:12].ljust(12, b"-")
        self.redis = aioredis.Redis.from_url(url)
        self.pubsub: Any = None
        self.channels: set[str] = set()
        self._confirm: dict[str, asyncio.Future[None]] = {}
        self._outbox: dict[uuid.UUID, list[bytes]] = {}
        self._controls: list[tuple[uuid.UUID, int, bytes]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._deliver: Deliver | None = None

    @staticmethod
    def channel(workspace_id: uuid.UUID) -> str:
        return f"{CHANNEL_PREFIX}{workspace_id}"

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        await self._subscribe_base()
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._publish_loop())]

    async def _subscribe_base(self) -> None:
        self.pubsub = self.redis.pubsub()
        # A node-wide channel keeps the subscription open while no document is loaded.
        await self.pubsub.subscribe(f"{CHANNEL_PREFIX}node:{self.node.decode()}", *self.channels)

    async def join(self, workspace_id: uuid.UUID) -> None:
        name = self.channel(workspace_id)
        if name in self.channels:
            return
        self.channels.add(name)
        confirmed = asyncio.get_running_loop().create_future()
        self._confirm[name] = confirmed
        try:
            await self.pubsub.subscribe(name)
            async with asyncio.timeout(10):
                await confirmed
        except (RedisError, OSError, TimeoutError):
            log.warning("could not subscribe to %s; edits from other nodes arrive only after a re-sync", name)
        finally:
            self._confirm.pop(name, None)

    async def leave(self, workspace_id: uuid.UUID) -> None:
        name = self.channel(workspace_id)
        self.channels.discard(name)
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.unsubscribe(name)

    def publish(self, workspace_id: uuid.UUID, frame: bytes) -> None:
        box = self._outbox.get(workspace_id)
        if box is None:
            self._outbox[workspace_id] = box = []
        box.append(frame)
        self._wake.set()

    def hello(self, workspace_id: uuid.UUID, state_vector: bytes) -> None:
        self._controls.append((workspace_id, OP_HELLO, state_vector))
        self._wake.set()

    def access(self, workspace_id: uuid.UUID, user_id: uuid.UUID) -> None:
        self._controls.append((workspace_id, OP_ACCESS, user_id.bytes))
        self._wake.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            outbox, self._outbox = self._outbox, {}
            controls, self._controls = self._controls, []
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for workspace_id, op, body in controls:
                        pipe.publish(self.channel(workspace_id), self.node + bytes([op]) + body)
                    for workspace_id, frames in outbox.items():
                        body = join_var_bytes(frames)
                        pipe.publish(self.channel(workspace_id), self.node + bytes([OP_FRAMES]) + body)
                    await pipe.execute()
            except (RedisError, OSError):
                log.warning("could not publish %d document messages to Redis", len(outbox) + len(controls))

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self.pubsub.listen():
                    self._on_message(message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                log.warning("lost the Redis subscription; reconnecting")
            except Exception:
                log.exception("Redis relay listener failed; reconnecting")
            await asyncio.sleep(1)
            with contextlib.suppress(RedisError, OSError):
                await self.pubsub.aclose()
            with contextlib.suppress(RedisError, OSError):
                await self._subscribe_base()
            # Whatever was published while we were away: ask the other nodes again.
            for name in list(self.channels):
                self._deliver_local_hello(name)

    def _deliver_local_hello(self, name: str) -> None:
        """Ask the manager to re-send its HELLO for a channel (it knows the state vector)."""
        if self._deliver is not None:
            self._deliver(uuid.UUID(name.removeprefix(CHANNEL_PREFIX)), OP_RESYNC, b"")

    def _on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind == "subscribe":
            waiting = self._confirm.get(name)
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
            return
        if kind != "message" or not name.startswith(CHANNEL_PREFIX) or self._deliver is None:
            return
        data: bytes = message["data"]
        if len(data) < 13 or data[:12] == self.node:
            return
        try:
            workspace_id = uuid.UUID(name.removeprefix(CHANNEL_PREFIX))
        except ValueError:
            return
        try:
            self._deliver(workspace_id, data[12], data[13:])
        except ProtocolError:
            log.warning("dropped a malformed relay message on %s", name)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            if self.pubsub is not None:
                await self.pubsub.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
