"""Websocket tickets: what goes into a websocket URL instead of an access token.

Browsers cannot set headers on a websocket, so the y-websocket endpoint takes its credential from the
URL (``/yjs/{workspace_id}?...``), and URLs end up in access logs, proxies and browser history. An access
token there is good for its whole lifetime (15 minutes) and for every API; a ticket
(``POST /api/v1/auth/ws-ticket``) is good for one connection, for ``STUDYHALL_WS_TICKET_TTL_S`` seconds
(20 by default), and for nothing else.

A ticket is a signed token (``typ: ws_ticket``, so it is never taken for an access token, nor one for
it) with its own id. Handing one out stores nothing; redeeming one records its id as spent until it
would have expired anyway, in Redis when scaled (``SET NX``: one connection on any node) and in this
process otherwise. What an attacker gains from a logged ticket: nothing once it was used or 20 s passed.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

import jwt
from pydantic import BaseModel, Field

from core_api.errors import unauthorized

JWT_ALGORITHM = "HS256"
TICKET_TYPE = "ws_ticket"


class TicketOut(BaseModel):
    ticket: str = Field(description="Put it in the websocket URL as `?ticket=`; good for one connection.")
    expires_in: int = Field(description="Seconds it stays valid.")


class SpentTickets(Protocol):
    """Remembers redeemed ticket ids for as long as the tickets would have been valid."""

    async def spend(self, ticket_id: str, keep_s: float) -> bool:
        """True the first time ``ticket_id`` is spent, False ever after (while it is remembered)."""
        ...


class LocalSpent:
    """Spent ticket ids in this process (one node)."""

    def __init__(self) -> None:
        # id → when it may be forgotten (monotonic clock); one keep time, so insertion order is that order.
        self._ids: dict[str, float] = {}

    async def spend(self, ticket_id: str, keep_s: float) -> bool:
        now = time.monotonic()
        while self._ids:
            oldest, until = next(iter(self._ids.items()))
            if until > now:
                break
            del self._ids[oldest]
        if ticket_id in self._ids:
            return False
        self._ids[ticket_id] = now + keep_s
        return True


class RedisSpent:
    """Spent ticket ids in Redis, so that a ticket opens one connection across all nodes."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def spend(self, ticket_id: str, keep_s: float) -> bool:
        first = await self.client.set(self.prefix + ticket_id, b"1", nx=True, px=max(1, int(keep_s * 1000)))
        return bool(first)


class Tickets:
    """Hands out and redeems websocket tickets."""

    def __init__(self, key: str, ttl_s: float, spent: SpentTickets) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.spent = spent

    def issue(self, user_id: uuid.UUID) -> TicketOut:
        now = int(time.time())
        ttl = max(1, round(self.ttl_s))
        claims = {"sub": str(user_id), "typ": TICKET_TYPE, "jti": uuid.uuid4().hex, "iat": now, "exp": now + ttl}
        return TicketOut(ticket=jwt.encode(claims, self._key, algorithm=JWT_ALGORITHM), expires_in=ttl)

    async def redeem(self, ticket: str) -> uuid.UUID:
        """The user a valid, unspent ticket was issued to; it is spent from now on. Else ``unauthorized``."""
        try:
            claims = jwt.decode(
                ticket, self._key, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub", "jti"]}
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("ticket expired; ask for a new one (POST /api/v1/auth/ws-ticket)") from None
        except jwt.PyJWTError:
            raise unauthorized("ticket is invalid") from None
        if claims.get("typ") != TICKET_TYPE:
            raise unauthorized("ticket is invalid")
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError:
            raise unauthorized("ticket is invalid") from None
        keep_s = max(1.0, float(claims["exp"]) - time.time() + 1)
        if not await self.spent.spend(str(claims["jti"]), keep_s):
            raise unauthorized("ticket already used; ask for a new one (POST /api/v1/auth/ws-ticket)")
        return user_id
