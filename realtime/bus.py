"""Every-node bus events between nodes: Redis pub/sub (scaled mode).

A service publishes an event with ``every_node=True`` (today: ``rights:<user>``, see
:func:`core_api.context.rights_changed`) when each node must act on it for the connections it holds.
:class:`RedisBusRelay` sends it on one channel per deployment, ``studyhall:bus:<deployment>``, as JSON
``{"node", "topic", "payload"}``; every other node's relay hands it to its own bus. The publishing node
has already delivered it to itself.

Redis pub/sub delivers at most once: a message published while a node's subscription is down is lost.
So when the subscription comes back the relay tells its node :data:`~core_api.context.RESYNC_TOPIC`,
and the node re-checks every connection it holds (:mod:`realtime.rights`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core_api.context import RESYNC_TOPIC, Bus
from core_api.settings import Settings

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "studyhall:bus:"
RECONNECT_S = 1.0


def bus_channel(settings: Settings) -> str:
    """One channel per deployment (its database), so two deployments sharing a Redis never mix."""
    database = settings.database_url.get_secret_value() if settings.database_url else str(settings.data_dir)
    return CHANNEL_PREFIX + hashlib.sha256(database.encode()).hexdigest()[:12]


class RedisBusRelay:
    """Carries a bus's every-node events to the other nodes and delivers theirs to it.

    Args:
        url: the Redis URL (``STUDYHALL_REDIS_URL``).
        channel: the deployment's channel (:func:`bus_channel`).
        node_id: this node's id; a node ignores its own messages (it delivered them already).
    """

    def __init__(self, url: str, channel: str, node_id: str) -> None:
        self.client_name = f"studyhall-bus-{node_id}"
        """The name its Redis connections go by (``CLIENT LIST``)."""
        self.redis = aioredis.Redis.from_url(url, client_name=self.client_name)
        self.channel = channel
        self.node_id = node_id
        self.bus: Bus | None = None
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None

    async def start(self, bus: Bus) -> None:
        """Subscribe (confirmed before this returns, so no later event is missed) and start listening."""
        self.bus = bus
        await self._subscribe()
        self._listener = asyncio.create_task(self._listen())
        bus.relay = self

    async def _subscribe(self) -> None:
        self._pubsub = self.redis.pubsub()
        await self._pubsub.subscribe(self.channel)
        async with asyncio.timeout(10):
            while True:
                message = await self._pubsub.get_message(timeout=1)
                if message is not None and message.get("type") == "subscribe":
                    return

    async def send(self, topic: str, payload: dict[str, Any]) -> None:
        await self.redis.publish(self.channel, json.dumps({"node": self.node_id, "topic": topic, "payload": payload}))

    async def _listen(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    await self._on_message(message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                log.warning("lost the Redis bus subscription; reconnecting")
            except Exception:
                log.exception("Redis bus listener failed; reconnecting")
            await asyncio.sleep(RECONNECT_S)
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
            try:
                await self._subscribe()
            except (RedisError, OSError, TimeoutError):
                continue  # listen() on the broken subscription fails again, and we retry
            if self.bus is not None:  # what was published while we were away is lost: re-check everything
                await self.bus.deliver(RESYNC_TOPIC, {})

    async def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message" or self.bus is None:
            return
        try:
            event = json.loads(message["data"])
            node, topic, payload = event["node"], event["topic"], event["payload"]
        except (ValueError, TypeError, KeyError):
            log.warning("dropped a malformed bus message")
            return
        if node == self.node_id or not isinstance(topic, str) or not isinstance(payload, dict):
            return
        await self.bus.deliver(topic, payload)

    async def close(self) -> None:
        if self.bus is not None and self.bus.relay is self:
            self.bus.relay = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        with contextlib.suppress(RedisError, OSError):
            if self._pubsub is not None:
                await self._pubsub.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()
