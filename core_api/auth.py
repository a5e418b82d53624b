"""Accounts and sessions: argon2 passwords, JWT access tokens, rotating refresh tokens, login limits.

Refresh tokens rotate: every refresh spends the presented token and issues the next one of the same
family. A spent token presented again means it was copied, so the whole family (every session descended
from that login) is revoked and the caller gets 401 -- with one exception, the lost answer: a client whose
refresh reached the server but whose answer never arrived (the page was closed or navigated away, the
network dropped) still holds the spent token and presents it again. Within ``refresh_reuse_grace_s`` of
the spend, and only while no newer token of the family has been used, that is a retry: it gets a new
token of the family. The next refresh with any of the family's tokens then revokes the others not used,
so at most one of them ever works.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import math
import os
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

import jwt
from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, EmailStr, Field, field_validator

from core_api.context import CORE, Core, audit, core_of, new_id
from core_api.db import Record
from core_api.errors import AppError, ErrorCode, conflict, unauthorized
from core_api.http import Api, Call, Input, Principal
from core_api.names import clean_display_name
from core_api.settings import Settings
from core_api.tickets import LocalSpent, RedisSpent, TicketOut, Tickets

Role = Literal["student", "instructor", "admin"]
ROLES: tuple[Role, ...] = ("student", "instructor", "admin")
JWT_ALGORITHM = "HS256"
T = TypeVar("T")


class Passwords:
    """argon2id hashing on a small thread pool of its own (each hash takes tens of milliseconds by design).

    Hashing is the most expensive thing a request can ask for, so the queue in front of it is bounded:
    past ``STUDYHALL_PASSWORD_HASH_QUEUE`` waiting hashes the caller gets 503 ``unavailable`` with
    ``Retry-After`` instead of a login flood making every other request wait.

    New passwords (:meth:`hash`: registrations, which need no account) and password checks
    (:meth:`verify`: logins) go in two lanes, so that a registration flood cannot lock everyone out:
    registrations may hold only ``STUDYHALL_PASSWORD_HASH_REGISTER_SHARE`` of the queue and of the
    threads (at least one of each, never every thread); the rest always stays for logins.
    """

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib)
        self._dummy = self._hasher.hash(secrets.token_hex(16))
        workers = max(2, os.cpu_count() or 2)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._pending = 0
        self.max_pending = settings.password_hash_queue
        share = settings.password_hash_register_share
        self._pending_new = 0
        self.max_pending_new = max(1, int(self.max_pending * share))
        self.new_workers = max(1, min(workers - 1, int(workers * share)))
        # Created on first use, on the running loop (tests run several apps on several loops).
        self._new_slots: asyncio.Semaphore | None = None

    def _admit(self, new: bool) -> None:
        if self._pending >= self.max_pending or (new and self._pending_new >= self.max_pending_new):
            raise AppError(ErrorCode.UNAVAILABLE, "too many sign-ins at once; retry in a moment", {"retry_after_s": 1})

    async def _run(self, fn: Callable[[], T], *, new: bool) -> T:
        self._admit(new)
        self._pending += 1
        self._pending_new += int(new)
        try:
            loop = asyncio.get_running_loop()
            if not new:
                return await loop.run_in_executor(self._pool, fn)
            # At most `new_workers` new-password hashes are handed to the pool at once (running or next in
            # its queue), so a login waits behind at most that many of them and the other threads are its.
            if self._new_slots is None:
                self._new_slots = asyncio.Semaphore(self.new_workers)
            async with self._new_slots:
                return await loop.run_in_executor(self._pool, fn)
        finally:
            self._pending -= 1
            self._pending_new -= int(new)

    async def hash(self, password: str) -> str:
        """Hash a new password (the registration lane)."""
        return await self._run(lambda: self._hasher.hash(password), new=True)

    async def verify(self, stored: str | None, password: str) -> bool:
        """Check a password (the login lane); an unknown account costs the same time as a wrong password."""

        def check() -> bool:
            try:
                return self._hasher.verify(stored or self._dummy, password) and stored is not None
            except (VerificationError, InvalidHashError):
                return False

        return await self._run(check, new=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Tokens:
    """Signs and checks short-lived access tokens (HS256 JWTs)."""

    def __init__(self, key: str, ttl_s: int) -> None:
        self._key = key
        self.ttl_s = ttl_s

    def issue(self, user_id: uuid.UUID, role: str, session: uuid.UUID | None = None) -> str:
        """An access token; ``session`` (the sign-in, ``sessions.id``) makes it end with that session."""
        now = int(time.time())
        claims = {"sub": str(user_id), "role": role, "typ": "access", "iat": now, "exp": now + self.ttl_s}
        if session is not None:
            claims["sid"] = str(session)
        return jwt.encode(claims, self._key, algorithm=JWT_ALGORITHM)

    def verify(self, token: str) -> uuid.UUID:
        """The user id of a valid access token; raises ``unauthorized`` otherwise."""
        return self.claims(token)[0]

    def claims(self, token: str) -> tuple[uuid.UUID, uuid.UUID | None]:
        """The user id and the session (None for a token that names none) of a valid access token."""
        try:
            claims = jwt.decode(token, self._key, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise unauthorized("access token expired") from None
        except jwt.PyJWTError:
            raise unauthorized("access token is invalid") from None
        if claims.get("typ") != "access":
            raise unauthorized("access token is invalid")
        try:
            session = claims.get("sid")
            return uuid.UUID(str(claims["sub"])), uuid.UUID(str(session)) if session is not None else None
        except ValueError:
            raise unauthorized("access token is invalid") from None


class FailureCounter:
    """Failed attempts (or any counted events) per key in a sliding window (in-process; one node's view).

    Keys whose window has passed are swept once per window, so many one-off keys (addresses) do not pile up.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}
        self._swept_at = time.monotonic()

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            return deque()
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if not hits:
            del self._hits[key]
        return hits

    def retry_after(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may try again; 0 when it is not blocked."""
        now = time.monotonic() if now is None else now
        hits = self._recent(key, now)
        if len(hits) < self.limit:
            return 0.0
        return max(0.0, hits[-self.limit] + self.window_s - now)

    def fail(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._sweep(now)
        self._recent(key, now)
        self._hits.setdefault(key, deque()).append(now)

    def take(self, key: str, now: float | None = None) -> float:
        """Count one event for ``key`` if it is under the limit (0 returned); else the seconds to wait."""
        now = time.monotonic() if now is None else now
        wait = self.retry_after(key, now)
        if wait <= 0:
            self.fail(key, now)
        return wait

    def clear(self, key: str) -> None:
        self._hits.pop(key, None)

    def _sweep(self, now: float) -> None:
        if now - self._swept_at < self.window_s:
            return
        self._swept_at = now
        horizon = now - self.window_s
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= horizon]:
            del self._hits[key]


class LoginLimiter(Protocol):
    """Events (failed logins, registrations) per key in a sliding window."""

    async def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it is not blocked."""
        ...

    async def fail(self, key: str) -> None: ...

    async def take(self, key: str) -> float:
        """Count one event if ``key`` is under the limit (answers 0), else answer the seconds to wait; atomic."""
        ...

    async def clear(self, key: str) -> None: ...


class LocalLimiter:
    """One process's view (:class:`FailureCounter`): enough for a single node."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.counter = FailureCounter(limit, window_s)

    async def retry_after(self, key: str) -> float:
        return self.counter.retry_after(key)

    async def fail(self, key: str) -> None:
        self.counter.fail(key)

    async def take(self, key: str) -> float:
        return self.counter.take(key)

    async def clear(self, key: str) -> None:
        self.counter.clear(key)


# KEYS[1]: the key's sorted set of failures (score: Redis server time in ms). ARGV: window ms, limit.
# Answers the ms to wait (0: not blocked). Redis's own clock, so every node judges alike.
_RETRY_AFTER = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[1]))
local n = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[2])
if n < limit then return 0 end
local oldest = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
return math.max(0, tonumber(oldest[2]) + tonumber(ARGV[1]) - ms)
"""
# KEYS[1] as above; ARGV: window ms, a unique member.
_FAIL = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[1]))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""
# KEYS[1] as above; ARGV: window ms, limit, a unique member. Counts the event if under the limit (answers 0),
# else answers the ms to wait (at least 1); check and count in one step, so concurrent requests cannot overshoot.
_TAKE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[1]))
local n = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[2])
if n >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + tonumber(ARGV[1]) - ms)
end
redis.call('ZADD', KEYS[1], ms, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
"""


class RedisLimiter:
    """The same window shared by every node through Redis (scaled mode): a sorted set per key."""

    def __init__(self, client: Any, prefix: str, limit: int, window_s: float) -> None:
        self.client = client
        self.prefix = prefix
        self.limit = limit
        self.window_ms = max(1, int(window_s * 1000))
        self._retry_after = client.register_script(_RETRY_AFTER)
        self._fail = client.register_script(_FAIL)
        self._take = client.register_script(_TAKE)

    def _key(self, key: str) -> str:
        return self.prefix + hashlib.sha256(key.encode()).hexdigest()

    async def retry_after(self, key: str) -> float:
        waited = await self._retry_after(keys=[self._key(key)], args=[self.window_ms, self.limit])
        return float(waited) / 1000

    async def fail(self, key: str) -> None:
        await self._fail(keys=[self._key(key)], args=[self.window_ms, uuid.uuid4().hex])

    async def take(self, key: str) -> float:
        waited = await self._take(keys=[self._key(key)], args=[self.window_ms, self.limit, uuid.uuid4().hex])
        return float(waited) / 1000

    async def clear(self, key: str) -> None:
        await self.client.delete(self._key(key))


class Auth:
    """The auth service: passwords, tokens, login limits and the registration limit for one app.

    Login and registration limits are counted in Redis when ``STUDYHALL_REDIS_URL`` is set, so a guesser
    (or an account factory) spreading attempts over several nodes meets the same limit as on one;
    otherwise in this process.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.passwords = Passwords(settings)
        self.tokens = Tokens(settings.jwt_key(), settings.access_token_ttl_s)
        self._redis: Any = None
        account_limit, address_limit = settings.login_max_failures_per_account, settings.login_max_failures_per_address
        self.by_account: LoginLimiter
        self.by_address: LoginLimiter
        self.registrations: LoginLimiter
        register_limit, register_window = settings.register_max_per_address, settings.register_window_s
        reset_window = settings.password_reset_window_s
        resets_by_address = (settings.password_reset_max_per_address, reset_window)
        resets_by_account = (settings.password_reset_max_per_account, reset_window)
        self.resets_by_address: LoginLimiter
        self.resets_by_account: LoginLimiter
        self.tickets: Tickets
        if settings.redis_url is not None:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(settings.redis_url.get_secret_value())
            window = settings.login_window_s
            # One namespace per deployment (its database), so two deployments on one Redis never mix.
            database = settings.database_url.get_secret_value() if settings.database_url else str(settings.data_dir)
            deployment = hashlib.sha256(database.encode()).hexdigest()[:12]
            space = "studyhall:login:" + deployment
            self.by_account = RedisLimiter(self._redis, space + ":account:", account_limit, window)
            self.by_address = RedisLimiter(self._redis, space + ":address:", address_limit, window)
            self.registrations = RedisLimiter(self._redis, space + ":register:", register_limit, register_window)
            self.resets_by_address = RedisLimiter(self._redis, space + ":reset-address:", *resets_by_address)
            self.resets_by_account = RedisLimiter(self._redis, space + ":reset-account:", *resets_by_account)
            spent = RedisSpent(self._redis, f"studyhall:ws-ticket:{deployment}:")
            self.tickets = Tickets(settings.jwt_key(), settings.ws_ticket_ttl_s, spent)
        else:
            self.by_account = LocalLimiter(account_limit, settings.login_window_s)
            self.by_address = LocalLimiter(address_limit, settings.login_window_s)
            self.registrations = LocalLimiter(register_limit, register_window)
            self.resets_by_address = LocalLimiter(*resets_by_address)
            self.resets_by_account = LocalLimiter(*resets_by_account)
            self.tickets = Tickets(settings.jwt_key(), settings.ws_ticket_ttl_s, LocalSpent())

    async def close(self) -> None:
        self.passwords.close()
        if self._redis is not None:
            await self._redis.aclose()


AUTH = web.AppKey("auth", Auth)


# --- schemas -------------------------------------------------------------------------------------


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    display_name: str
    role: Role
    created_at: datetime
    bio: str = Field("", description="What the user says about themselves (`PATCH /me {bio}`).")
    avatar_url: str | None = Field(
        None, description="The user's picture (`PUT /me/avatar`), a 256x256 PNG; null when they have none."
    )


def avatar_url(user_id: uuid.UUID, version: int | None) -> str | None:
    """Where a user's picture is served; the version makes a new picture a new URL (caches stay right)."""
    return f"/api/v1/users/{user_id}/avatar?v={version}" if version is not None else None


def user_out(r: Record) -> UserOut:
    keys = set(r.keys())
    return UserOut(
        id=r["id"],
        email=r["email"],
        display_name=r["display_name"],
        role=r["role"],
        created_at=r["created_at"],
        bio=r["bio"] if "bio" in keys else "",
        avatar_url=avatar_url(r["id"], r["avatar_version"]) if "avatar_version" in keys else None,
    )


class RegisterIn(Input):
    email: EmailStr = Field(max_length=254)
    password: str = Field(min_length=8, max_length=256)
    display_name: str = Field(min_length=1, max_length=80)

    @field_validator("display_name")
    @classmethod
    def _visible_name(cls, value: str) -> str:
        return clean_display_name(value)  # NFKC, trimmed, no invisible or control characters (core_api/names.py)


class LoginIn(Input):
    email: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=256)


class RefreshIn(Input):
    refresh_token: str = Field(min_length=1, max_length=200)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
    user: UserOut | None = Field(
        None,
        description="The account the tokens are for (as `GET /me` answers), so that a client resuming a session "
        "needs no second round trip before it can show it.",
    )


# --- service -------------------------------------------------------------------------------------


def _hash_refresh(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def address_key(address: str) -> str:
    """The unit a per-address limit counts: the IP address, but an IPv6 client's whole /64 network (one
    subscriber holds at least a /64, so counting single IPv6 addresses would count nothing)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


async def limit_registration(auth: Auth, address: str) -> None:
    """Count a registration from ``address``; 429 ``rate_limited`` with ``Retry-After`` past the limit."""
    wait = await auth.registrations.take(address_key(address))
    if wait > 0:
        raise AppError(
            ErrorCode.RATE_LIMITED,
            "too many accounts registered from your address; try again later",
            {"retry_after_s": math.ceil(wait)},
        )


async def register(core: Core, auth: Auth, body: RegisterIn, role: Role = "student") -> Record:
    # A taken email is answered before hashing: a duplicate must not cost the server a hash (the answer,
    # 409, is the same either way; the insert below still settles a race).
    if await core.pool.fetchval("SELECT true FROM users WHERE lower(email) = lower($1)", body.email):
        raise conflict("an account with this email already exists")
    password_hash = await auth.passwords.hash(body.password)
    async with core.transaction() as tx:
        row = await tx.conn.fetchrow(
            "INSERT INTO users (id, email, display_name, password_hash, role) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT DO NOTHING RETURNING id, email, display_name, role, created_at",
            new_id(),
            body.email,
            body.display_name,
            password_hash,
            role,
        )
    if row is None:
        raise conflict("an account with this email already exists")
    return row


async def _issue_pair(
    core: Core,
    auth: Auth,
    conn: Any,
    user_id: uuid.UUID,
    role: str,
    family: uuid.UUID,
    user: UserOut | None = None,
    *,
    new_session: dict[str, str] | None = None,
) -> TokenPair:
    """A new token pair in ``family`` (the session); ``new_session`` (its user agent and address) starts one."""
    refresh = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + timedelta(seconds=core.settings.refresh_token_ttl_s)
    if new_session is not None:
        await conn.execute(
            "INSERT INTO sessions (id, user_id, expires_at, user_agent, address) VALUES ($1, $2, $3, $4, $5)",
            family,
            user_id,
            expires,
            new_session.get("user_agent", "")[:SESSION_AGENT_MAX],
            new_session.get("address", "")[:64],
        )
    else:
        await conn.execute("UPDATE sessions SET last_used_at = now(), expires_at = $2 WHERE id = $1", family, expires)
    await conn.execute(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4, $5)",
        new_id(),
        family,
        user_id,
        _hash_refresh(refresh),
        expires,
    )
    return TokenPair(
        access_token=auth.tokens.issue(user_id, role, family),
        refresh_token=refresh,
        expires_in=auth.tokens.ttl_s,
        user=user,
    )


SESSION_AGENT_MAX = 300  # characters of a User-Agent kept to name a session


async def end_sessions(
    conn: Any, user_id: uuid.UUID, *, only: uuid.UUID | None = None, keep: uuid.UUID | None = None
) -> int:
    """End a user's sessions (one: ``only``; else all but ``keep``): their refresh tokens stop working and so do
    the access tokens that name them, at the next request. Returns how many were ended."""
    ended = await conn.fetch(
        "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL"
        " AND ($2::uuid IS NULL OR id = $2) AND ($3::uuid IS NULL OR id <> $3) RETURNING id",
        user_id,
        only,
        keep,
    )
    ids = [r["id"] for r in ended]
    if ids:
        await conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = ANY($1::uuid[]) AND revoked_at IS NULL", ids
        )
    if only is None and keep is None:  # every session: tokens of families from before sessions were kept too
        await conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", user_id
        )
    return len(ids)


async def ended_sessions(core: Core, session_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these sessions have ended (signed out, revoked, expired or gone)."""
    if not session_ids:
        return set()
    live = await core.pool.fetch(
        "SELECT id FROM sessions WHERE id = ANY($1::uuid[]) AND revoked_at IS NULL AND expires_at > now()",
        list(session_ids),
    )
    return session_ids - {r["id"] for r in live}


async def login(core: Core, auth: Auth, email: str, password: str, address: str, user_agent: str = "") -> TokenPair:
    account_key = email.strip().lower()
    wait = max(await auth.by_account.retry_after(account_key), await auth.by_address.retry_after(address))
    if wait > 0:
        raise AppError(
            ErrorCode.RATE_LIMITED,
            "too many failed logins; try again later",
            {"retry_after_s": int(wait) + 1},
        )
    user = await core.pool.fetchrow("SELECT id, role, password_hash FROM users WHERE lower(email) = $1", account_key)
    if not await auth.passwords.verify(user["password_hash"] if user else None, password):
        await auth.by_account.fail(account_key)
        await auth.by_address.fail(address)
        # Audited for the account it names (none for an unknown address: nothing about it to protect).
        if user is not None:
            async with core.transaction() as tx:
                await audit(tx, None, "user.login_failed", "user", user["id"], address=address)
        raise unauthorized("wrong email or password")
    assert user is not None
    await auth.by_account.clear(account_key)
    async with core.transaction() as tx:
        session = {"user_agent": user_agent, "address": address}
        family = new_id()
        await audit(tx, user["id"], "user.login", "session", family, address=address)
        return await _issue_pair(core, auth, tx.conn, user["id"], user["role"], family, new_session=session)


async def refresh(core: Core, auth: Auth, token: str) -> TokenPair:
    revoked_family = False
    async with core.transaction() as tx:
        row = await tx.conn.fetchrow(
            "SELECT t.id, t.family_id, t.user_id, t.expires_at, t.spent_at, t.revoked_at, u.role,"
            " u.email, u.display_name, u.created_at, u.bio, u.avatar_version"
            " FROM refresh_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1 FOR UPDATE OF t",
            _hash_refresh(token),
        )
        if row is None or row["revoked_at"] is not None or row["expires_at"] <= datetime.now(UTC):
            raise unauthorized("refresh token is invalid or expired")
        if row["spent_at"] is not None and await _is_retry(tx.conn, core.settings, row):
            # The answer to the first refresh with this token was lost: a sibling of the unused successor.
            return await _issue_pair(core, auth, tx.conn, row["user_id"], row["role"], row["family_id"], _user(row))
        if row["spent_at"] is not None:
            await tx.conn.execute(
                "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
                row["family_id"],
            )
            await tx.conn.execute(
                "UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", row["family_id"]
            )
            revoked_family = True
        else:
            await tx.conn.execute("UPDATE refresh_tokens SET spent_at = clock_timestamp() WHERE id = $1", row["id"])
            # Siblings issued to retries (see the module docstring) that were never used die now.
            await tx.conn.execute(
                "UPDATE refresh_tokens SET revoked_at = now()"
                " WHERE family_id = $1 AND id <> $2 AND spent_at IS NULL AND revoked_at IS NULL",
                row["family_id"],
                row["id"],
            )
            return await _issue_pair(core, auth, tx.conn, row["user_id"], row["role"], row["family_id"], _user(row))
    assert revoked_family
    raise unauthorized("refresh token was already used; every session from that login is now signed out")


def _user(row: Record) -> UserOut:
    return UserOut(
        id=row["user_id"],
        email=row["email"],
        display_name=row["display_name"],
        role=row["role"],
        created_at=row["created_at"],
        bio=row["bio"],
        avatar_url=avatar_url(row["user_id"], row["avatar_version"]),
    )


async def _is_retry(conn: Any, settings: Settings, token: Record) -> bool:
    """Whether a spent refresh token presented again is a retry after a lost answer: spent within the grace
    window, and no token of its family has been used since (its successor is still unused)."""
    grace = settings.refresh_reuse_grace_s
    if grace <= 0 or token["spent_at"] < datetime.now(UTC) - timedelta(seconds=grace):
        return False
    used_since = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE family_id = $1 AND spent_at > $2)",
        token["family_id"],
        token["spent_at"],
    )
    return not used_since


async def logout(core: Core, token: str) -> None:
    async with core.transaction() as tx:
        await tx.conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND family_id ="
            " (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
            _hash_refresh(token),
        )
        await tx.conn.execute(
            "UPDATE sessions SET revoked_at = now() WHERE revoked_at IS NULL AND id ="
            " (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
            _hash_refresh(token),
        )


_USER_COLUMNS = "id, email, display_name, role, created_at, bio, avatar_version"


async def account(core: Core, user_id: uuid.UUID) -> Record | None:
    """One account as the API shows it (no password hash)."""
    row: Record | None = await core.pool.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL", user_id
    )
    return row


_PRINCIPAL_COLUMNS = "id, email, display_name, role"


def _principal(row: Record) -> Principal:
    return Principal(id=row["id"], role=row["role"], email=row["email"], display_name=row["display_name"])


async def current_principal(core: Core, user_id: uuid.UUID) -> Principal | None:
    """The user as stored now; None when the account no longer exists."""
    row = await core.pool.fetchrow(
        f"SELECT {_PRINCIPAL_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL", user_id
    )
    return _principal(row) if row is not None else None


async def current_principals(core: Core, user_ids: list[uuid.UUID]) -> dict[uuid.UUID, Principal]:
    """Several users as stored now, by id (accounts that no longer exist are missing)."""
    rows = await core.pool.fetch(
        f"SELECT {_PRINCIPAL_COLUMNS} FROM users WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL", user_ids
    )
    return {row["id"]: _principal(row) for row in rows}


async def principal_for(core: Core, auth: Auth, token: str) -> Principal:
    """The user an access token belongs to, as stored now.

    The token's ``role`` claim is never trusted: the role is read from the account on every request, so
    a demotion applies to the very next request however long the token still lives.
    """
    user_id, session = auth.tokens.claims(token)
    if session is None:  # a token from before sessions (or made by a test): valid until it expires
        principal = await current_principal(core, user_id)
        if principal is None:
            raise unauthorized("account no longer exists")
        return principal
    row = await core.pool.fetchrow(
        f"SELECT {_PRINCIPAL_COLUMNS}, (SELECT s.revoked_at IS NULL AND s.expires_at > now() FROM sessions s"
        " WHERE s.id = $2 AND s.user_id = u.id) AS live FROM users u WHERE u.id = $1 AND u.deleted_at IS NULL",
        user_id,
        session,
    )
    if row is None:
        raise unauthorized("account no longer exists")
    if not row["live"]:
        raise unauthorized("this session was signed out; sign in again")
    return dataclasses.replace(_principal(row), session_id=session)


async def principal_from_url(core: Core, auth: Auth, query: Mapping[str, str]) -> Principal:
    """The user of a websocket URL: its one-use ``?ticket=`` (preferred), or its access ``?token=``."""
    ticket, token = query.get("ticket", ""), query.get("token", "")
    if ticket:
        principal = await current_principal(core, await auth.tickets.redeem(ticket))
        if principal is None:
            raise unauthorized("account no longer exists")
        return principal
    if token:
        return await principal_for(core, auth, token)
    raise unauthorized("send a ticket as ?ticket= (POST /api/v1/auth/ws-ticket), or an access token as ?token=")


async def authenticate(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("send an access token as 'Authorization: Bearer <token>'")
    return await principal_for(request.app[CORE], request.app[AUTH], token.strip())


# --- handlers ------------------------------------------------------------------------------------

api = Api()
TAG = "auth"


@api.route(
    "POST",
    "/auth/register",
    summary="Create an account (role student)",
    tag=TAG,
    description="Limited per client address (an IPv6 client's /64): past `STUDYHALL_REGISTER_MAX_PER_ADDRESS` "
    "registrations within `STUDYHALL_REGISTER_WINDOW_S`, 429 `rate_limited` with `Retry-After`. Registrations may "
    "take only part of the password-hashing capacity; past it, 503 `unavailable` with `Retry-After`.",
    auth=False,
    body=RegisterIn,
    response=UserOut,
    status=201,
    errors=[409, 429, 503],
)
async def register_account(call: Call) -> UserOut:
    auth = call.request.app[AUTH]
    await limit_registration(auth, call.remote)
    return user_out(await register(core_of(call), auth, call.body))


@api.route(
    "POST",
    "/auth/login",
    summary="Exchange email and password for tokens",
    tag=TAG,
    auth=False,
    body=LoginIn,
    response=TokenPair,
    errors=[401, 429, 503],
)
async def login_account(call: Call) -> TokenPair:
    agent = call.request.headers.get("User-Agent", "")
    return await login(core_of(call), call.request.app[AUTH], call.body.email, call.body.password, call.remote, agent)


@api.route(
    "POST",
    "/auth/refresh",
    summary="Rotate a refresh token into a new pair (with the account, as `GET /me` answers it)",
    tag=TAG,
    auth=False,
    body=RefreshIn,
    response=TokenPair,
    errors=[401],
)
async def refresh_tokens(call: Call) -> TokenPair:
    return await refresh(core_of(call), call.request.app[AUTH], call.body.refresh_token)


@api.route(
    "POST",
    "/auth/logout",
    summary="Revoke a refresh token and its family",
    tag=TAG,
    auth=False,
    body=RefreshIn,
    status=204,
)
async def logout_session(call: Call) -> None:
    await logout(core_of(call), call.body.refresh_token)


@api.route(
    "POST",
    "/auth/ws-ticket",
    summary="A one-use ticket for a websocket URL (`/yjs/{workspace_id}?ticket=`), valid for a few seconds "
    "(STUDYHALL_WS_TICKET_TTL_S); ask for a new one before every connect",
    tag=TAG,
    response=TicketOut,
)
async def post_ws_ticket(call: Call) -> TicketOut:
    return call.request.app[AUTH].tickets.issue(call.me.id)


@api.route("GET", "/me", summary="The caller's account", tag=TAG, response=UserOut)
async def get_me(call: Call) -> UserOut:
    row = await account(core_of(call), call.me.id)
    if row is None:
        raise unauthorized("account no longer exists")
    return user_out(row)
