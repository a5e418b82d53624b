"""The Engine.IO server under Socket.IO: strict about what clients send, wary of sessions that never log in.

python-engineio, as it comes, trusts its clients in two ways this module takes back:

- **Protocol garbage.** A packet of an unknown type (``9``) raised inside its logging call and was logged
  with a full traceback per packet while the connection stayed open; an undecodable long-polling body
  did the same. :class:`GuardedSocket` accepts from a client only the packets a client sends (CLOSE,
  PONG, MESSAGE) and closes the session on anything else, logging one line: over websocket (the direct
  driver of :mod:`realtime.fastws` and the stock one) and over long-polling (the POST answers 400).
- **Sessions without an account.** Every ``GET /socket.io/?EIO=4&transport=polling`` made a session that
  lived until its pings timed out (45 s), so 27,000 of them in 10 s held 165 MB. :class:`SessionGate`
  counts the sessions that have not completed the Socket.IO connect with a valid token, per client
  address (the address REST uses, so ``STUDYHALL_TRUST_FORWARDED_FOR`` applies) and on the whole node,
  refuses new ones past ``STUDYHALL_SIO_ANONYMOUS_PER_ADDRESS`` (429 ``rate_limited``) or
  ``STUDYHALL_SIO_ANONYMOUS_MAX`` (503 ``unavailable``), both with Retry-After, and closes those still
  anonymous ``STUDYHALL_SIO_CONNECT_TIMEOUT_S`` after they opened.

Like :mod:`realtime.fastws`, this relies on python-engineio internals (``_handle_connect``, the socket's
``receive`` and ``handle_post_request``), pinned in ``pyproject.toml`` and guarded by the tests that drive
the server with the official clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from typing import Any, NoReturn

import engineio
import socketio
from engineio import exceptions, packet, payload
from engineio.async_socket import AsyncSocket

from core_api.errors import AppError, ErrorCode
from core_api.http import CLIENT_ADDR

log = logging.getLogger(__name__)

# What a client may send once its session is open (the upgrade's probe and UPGRADE are handled apart).
CLIENT_PACKETS = frozenset({packet.CLOSE, packet.PONG, packet.MESSAGE})


class GuardedSocket(AsyncSocket):  # type: ignore[misc]
    """An Engine.IO session that ends, with one log line, when its client sends what is not Engine.IO."""

    async def receive(self, pkt: packet.Packet) -> None:
        if pkt.packet_type not in CLIENT_PACKETS:
            await self.refuse(f"unexpected Engine.IO packet type {pkt.packet_type!r}")
        await super().receive(pkt)

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        """A long-polling POST: its body decoded strictly, then each packet received in order."""
        try:
            length = int(environ.get("CONTENT_LENGTH", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= self.server.max_http_buffer_size:
            raise exceptions.ContentTooLongError()
        body: bytes = await environ["wsgi.input"].read(length)
        try:
            packets = payload.Payload(encoded_payload=body.decode("utf-8")).packets
        except Exception as exc:  # not an Engine.IO payload: too many packets, bad UTF-8, bad types
            await self.refuse(f"malformed long-polling payload ({type(exc).__name__})")
        for pkt in packets:
            await self.receive(pkt)

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        gate: SessionGate | None = getattr(self.server, "gate", None)
        if gate is not None:
            gate.forget(self.sid)
        await super().close(wait=wait, abort=abort, reason=reason)

    async def refuse(self, why: str) -> NoReturn:
        """Close this session (its client is told with a CLOSE packet) and stop handling the request."""
        log.warning("closing Engine.IO client %s: %s", self.sid, why)
        await self.close(wait=False, abort=False, reason=self.server.reason.TRANSPORT_ERROR)
        raise exceptions.SocketIsClosedError(why)


class SessionGate:
    """Engine.IO sessions that have not logged in yet: how many per address and in all, and for how long.

    Sessions enter when they open and leave when their Socket.IO connect succeeds (:meth:`authenticated`)
    or when they close; one task, running only while such sessions exist, closes those older than
    ``timeout_s``. Refusals and expiries are counted for ``/metrics``.
    """

    def __init__(self, per_address: int, total: int, timeout_s: float) -> None:
        self.per_address = per_address
        self.total = total
        self.timeout_s = timeout_s
        self.server: Any = None  # the Engine.IO server, set by it
        # eio sid → (client address, deadline on the loop's clock); insertion order is deadline order.
        self.pending: dict[str, tuple[str, float]] = {}
        self.by_address: dict[str, int] = {}
        self.refused = {"per_address": 0, "total": 0}
        self.expired = 0
        self._sweeper: asyncio.Task[None] | None = None

    def admit(self, address: str) -> AppError | None:
        """None if a new session from ``address`` may open; otherwise the error to answer with."""
        retry = {"retry_after_s": math.ceil(self.timeout_s)}
        if self.by_address.get(address, 0) >= self.per_address:
            self.refused["per_address"] += 1
            message = "too many Socket.IO sessions from your address are waiting to log in; retry later"
            return AppError(ErrorCode.RATE_LIMITED, message, retry)
        if len(self.pending) >= self.total:
            self.refused["total"] += 1
            return AppError(ErrorCode.UNAVAILABLE, "this server has too many Socket.IO sessions logging in", retry)
        return None

    def opened(self, sid: str, address: str) -> None:
        loop = asyncio.get_running_loop()
        self.pending[sid] = (address, loop.time() + self.timeout_s)
        self.by_address[address] = self.by_address.get(address, 0) + 1
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._expire())

    def authenticated(self, sid: str) -> None:
        self.forget(sid)

    def forget(self, sid: str) -> None:
        entry = self.pending.pop(sid, None)
        if entry is None:
            return
        address = entry[0]
        left = self.by_address[address] - 1
        if left:
            self.by_address[address] = left
        else:
            del self.by_address[address]

    async def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                sid, (_, deadline) = next(iter(self.pending.items()))
                wait = deadline - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                self.forget(sid)
                self.expired += 1
                if self.server is not None:
                    try:
                        await self.server.end(sid)
                    except Exception:
                        log.exception("could not close the expired Engine.IO session %s", sid)
        finally:
            self._sweeper = None

    async def close(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper


class EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server with :class:`GuardedSocket` sessions admitted by a :class:`SessionGate`."""

    def __init__(self, *, gate: SessionGate | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        if gate is not None:
            gate.server = self

    async def end(self, sid: str, reason: str | None = None) -> None:
        """Close a session now: its client gets a CLOSE packet (on its websocket, or its next poll).

        Unlike ``disconnect``, this does not wait for a long-polling client to collect that packet (one that
        never polls again would keep the caller waiting for ever); the session is dropped at once.
        """
        socket = self.sockets.pop(sid, None)
        if socket is not None and not socket.closed:
            await socket.close(wait=False, abort=False, reason=reason or self.reason.SERVER_DISCONNECT)

    async def _handle_connect(self, environ: dict[str, Any], transport: str, jsonp_index: Any = None) -> Any:
        """python-engineio's ``AsyncServer._handle_connect`` (4.15), with the gate and :class:`GuardedSocket`.

        (Its ``cookie`` option is left out: this server sets no session cookie.)
        """
        request = environ.get("aiohttp.request")
        address = str(request.get(CLIENT_ADDR) or request.remote) if request is not None else "unknown"
        if self.gate is not None:
            refused = self.gate.admit(address)
            if refused is not None:
                return _error_response(refused)
        if self.start_service_task:  # type: ignore[has-type]
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)

        sid = self.generate_id()
        s = GuardedSocket(self, sid)
        self.sockets[sid] = s
        if self.gate is not None:
            self.gate.opened(sid, address)

        pkt = packet.Packet(
            packet.OPEN,
            {
                "sid": sid,
                "upgrades": self._upgrades(sid, transport),
                "pingTimeout": int(self.ping_timeout * 1000),
                "pingInterval": int(self.ping_interval + self.ping_interval_grace_period) * 1000,
                "maxPayload": self.max_http_buffer_size,
            },
        )
        await s.send(pkt)

        ret = await self._trigger_event("connect", sid, environ, run_async=False)
        if ret is not None and ret is not True:
            del self.sockets[sid]
            if self.gate is not None:
                self.gate.forget(sid)
            self.logger.warning("Application rejected connection")
            return self._unauthorized(ret or None)

        s.schedule_ping()

        if transport == "websocket":
            ret = await s.handle_get_request(environ)
            if s.closed and sid in self.sockets:
                del self.sockets[sid]
            return ret
        s.connected = True
        try:
            return self._ok(await s.poll(), jsonp_index=jsonp_index)
        except exceptions.QueueEmpty:
            return self._bad_request()


def _error_response(error: AppError) -> dict[str, Any]:
    """An error as python-engineio's response dict, in the REST API's shape (``{"error": {...}}``)."""
    headers = [("Content-Type", "application/json")]
    if "retry_after_s" in error.details:
        headers.append(("Retry-After", str(error.details["retry_after_s"])))
    body = json.dumps({"error": error.to_dict()}).encode()
    return {"status": f"{error.status} {error.code.value.upper()}", "headers": headers, "response": body}


class FastPacket(socketio.packet.Packet):  # type: ignore[misc]
    """python-socketio's packet, with its check for binary data in a loop instead of a recursion building a list
    per level: the same answer (bytes or bytearray anywhere in nested lists and dicts), about 6x faster. Every
    packet the server sends is checked whole, so a ``room:join_many`` answer listing hundreds of people present
    in each room cost more in that check (1.3 ms) than in its JSON encoding (0.7 ms)."""

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        stack = [data]
        pop, push = stack.pop, stack.extend
        while stack:
            item = pop()
            kind = type(item)
            if kind is str or kind is int or item is None or kind is bool or kind is float:
                continue
            if kind is dict:
                push(item.values())
            elif kind is list:
                push(item)
            elif isinstance(item, (bytes, bytearray)):
                return True
            elif isinstance(item, dict):
                push(item.values())
            elif isinstance(item, list):
                push(item)
        return False


class GuardedSocketIO(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on :class:`EngineServer` (pass ``gate=`` through to it), sending
    :class:`FastPacket`s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", FastPacket)
        super().__init__(*args, **kwargs)

    def _engineio_server_class(self) -> type[EngineServer]:
        return EngineServer
