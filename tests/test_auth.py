"""Accounts and sessions: register, login, refresh rotation with reuse detection, logout, /me, limits."""

from __future__ import annotations

import uuid
from typing import Any

import jwt

from tests.conftest import TEST_JWT_SECRET, Actor, ApiClient, make_settings


async def register_and_login(api: ApiClient, email: str = "ada@example.com") -> dict[str, Any]:
    status, user = await api.call(
        "POST", "/auth/register", json={"email": email, "password": "s3cret-pass", "display_name": "Ada"}
    )
    assert status == 201, user
    assert user["role"] == "student"
    assert "password" not in str(user)
    status, pair = await api.call("POST", "/auth/login", json={"email": email, "password": "s3cret-pass"})
    assert status == 200, pair
    return dict(pair)


async def test_register_login_me(api: ApiClient) -> None:
    pair = await register_and_login(api, "grace@example.com")
    assert pair["token_type"] == "bearer" and pair["expires_in"] > 0
    status, me = await api.call("GET", "/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert status == 200
    assert me["email"] == "grace@example.com" and me["display_name"] == "Ada"


async def test_duplicate_email_is_a_conflict_regardless_of_case(api: ApiClient) -> None:
    await register_and_login(api, "Case@Example.com")
    status, body = await api.call(
        "POST", "/auth/register", json={"email": "case@example.com", "password": "another-pass", "display_name": "B"}
    )
    assert status == 409 and body["error"]["code"] == "conflict"


async def test_wrong_password_and_unknown_account_look_the_same(api: ApiClient) -> None:
    await register_and_login(api, "linus@example.com")
    s1, b1 = await api.call("POST", "/auth/login", json={"email": "linus@example.com", "password": "nope-nope"})
    s2, b2 = await api.call("POST", "/auth/login", json={"email": "nobody@example.com", "password": "nope-nope"})
    assert s1 == s2 == 401
    assert b1["error"] == b2["error"]


async def test_refresh_rotates_and_reuse_revokes_the_family(api: ApiClient) -> None:
    pair = await register_and_login(api, "rot@example.com")
    status, second = await api.call("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 200 and second["refresh_token"] != pair["refresh_token"]
    # The answer names the account as /me does (a resuming client shows it without asking /me first).
    status, me = await api.call("GET", "/me", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert status == 200 and second["user"] == me
    status, third = await api.call("POST", "/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert status == 200
    # The first token is spent and its successor was used since: presenting it again is a theft signal.
    status, body = await api.call("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 401 and body["error"]["code"] == "unauthorized"
    # ...and the legitimate holder's newest token died with the family.
    status, _ = await api.call("POST", "/auth/refresh", json={"refresh_token": third["refresh_token"]})
    assert status == 401


async def test_a_refresh_whose_answer_was_lost_can_be_retried(api: ApiClient) -> None:
    """A page closed mid-refresh: the server spent the token, the browser never got the next one and presents
    the spent one again. That retry gets a token of the same session instead of signing the user out; the
    next refresh then leaves only one of the two tokens issued for the spent one alive."""
    pair = await register_and_login(api, "lost-answer@example.com")
    status, lost = await api.call("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 200  # ...but the browser never saw this answer
    status, retried = await api.call("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 200, retried
    assert retried["refresh_token"] not in (pair["refresh_token"], lost["refresh_token"])
    status, me = await api.call("GET", "/me", headers={"Authorization": f"Bearer {retried['access_token']}"})
    assert status == 200 and me["email"] == "lost-answer@example.com"
    status, onward = await api.call("POST", "/auth/refresh", json={"refresh_token": retried["refresh_token"]})
    assert status == 200
    # The answer that got lost carried a token nobody should hold: it no longer works (and is no theft signal).
    status, _ = await api.call("POST", "/auth/refresh", json={"refresh_token": lost["refresh_token"]})
    assert status == 401
    status, _ = await api.call("POST", "/auth/refresh", json={"refresh_token": onward["refresh_token"]})
    assert status == 200
    # Once a newer token was used, the first one is a theft signal again: the session ends.
    status, _ = await api.call("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 401
    status, me = await api.call("GET", "/me", headers={"Authorization": f"Bearer {onward['access_token']}"})
    assert status == 401


async def test_without_a_grace_window_any_reuse_signs_the_session_out(aiohttp_client, database_url, tmp_path) -> None:
    from realtime.app import create_app

    settings = make_settings(database_url, tmp_path, refresh_reuse_grace_s=0)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    pair = await register_and_login(api, "strict-reuse@example.com")
    status, second = await api.call("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 200
    status, _ = await api.call("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 401
    status, _ = await api.call("POST", "/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert status == 401


async def test_logout_revokes_refresh_token(api: ApiClient) -> None:
    pair = await register_and_login(api, "bye@example.com")
    status, _ = await api.call("POST", "/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert status == 204
    status, _ = await api.call("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 401


async def test_bad_tokens_are_refused(api: ApiClient) -> None:
    actor = await api.user()
    forged = jwt.encode({"sub": actor.id, "typ": "access", "exp": 4102444800}, "x" * 40, algorithm="HS256")
    expired = jwt.encode({"sub": actor.id, "typ": "access", "exp": 1}, TEST_JWT_SECRET, algorithm="HS256")
    for header in ("", "Bearer", "Bearer garbage", f"Bearer {forged}", f"Bearer {expired}", f"Basic {actor.token}"):
        status, body = await api.call("GET", "/me", headers={"Authorization": header} if header else {})
        assert status == 401, header
        assert body["error"]["code"] == "unauthorized"


async def test_brute_force_login_is_rate_limited(aiohttp_client, database_url, tmp_path) -> None:
    from realtime.app import create_app

    # redis_url=None: the rule itself, in one process (other tests' failures from 127.0.0.1 must not count)
    settings = make_settings(database_url, tmp_path, login_max_failures_per_account=3, redis_url=None)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    await register_and_login(api, "target@example.com")
    for _ in range(3):
        status, _ = await api.call("POST", "/auth/login", json={"email": "target@example.com", "password": "guess-1"})
        assert status == 401
    resp = await api.http.post("/api/v1/auth/login", json={"email": "TARGET@example.com", "password": "s3cret-pass"})
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) > 0


async def test_bad_bodies_get_clear_4xx(api: ApiClient) -> None:
    cases = [
        ("not json", 400, "invalid_input"),
        ('{"email": 5, "password": "x", "display_name": "y"}', 400, "invalid_input"),
        ('{"email": "a@b.co", "password": "longenough", "display_name": "n", "admin": true}', 400, "invalid_input"),
        ("[]", 400, "invalid_input"),
        ("", 400, "invalid_input"),
    ]
    for raw, want_status, want_code in cases:
        status, body = await api.call("POST", "/auth/register", data=raw, headers={"Content-Type": "application/json"})
        assert status == want_status, raw
        assert body["error"]["code"] == want_code
    status, body = await api.call(
        "POST", "/auth/register", data="x" * (2 * 1024 * 1024), headers={"Content-Type": "application/json"}
    )
    assert status == 413 and body["error"]["code"] == "payload_too_large"


async def test_a_login_flood_is_shed_with_503_not_queued(aiohttp_client, database_url, tmp_path) -> None:
    import asyncio

    from realtime.app import create_app

    settings = make_settings(database_url, tmp_path, password_hash_queue=2)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    await register_and_login(api, "popular@example.com")

    async def attempt() -> tuple[int, str | None]:
        resp = await api.http.post(
            "/api/v1/auth/login", json={"email": "popular@example.com", "password": "s3cret-pass"}
        )
        return resp.status, resp.headers.get("Retry-After")

    answers = await asyncio.gather(*(attempt() for _ in range(12)))
    statuses = sorted(status for status, _ in answers)
    assert 200 in statuses
    assert 503 in statuses
    assert set(statuses) <= {200, 503}
    assert all(retry == "1" for status, retry in answers if status == 503)


async def test_failed_logins_from_one_address_across_accounts_are_limited(
    aiohttp_client, database_url, tmp_path
) -> None:
    from realtime.app import create_app

    api = ApiClient(
        await aiohttp_client(
            create_app(make_settings(database_url, tmp_path, login_max_failures_per_address=4, redis_url=None))
        )
    )
    for i in range(4):
        status, _ = await api.call(
            "POST", "/auth/login", json={"email": f"guess{i}@example.com", "password": "wrong-pw"}
        )
        assert status == 401
    status, body = await api.call("POST", "/auth/login", json={"email": "fresh@example.com", "password": "wrong-pw"})
    assert status == 429
    assert body["error"]["code"] == "rate_limited"


async def test_with_redis_the_login_limit_holds_across_nodes(aiohttp_client, database_url, tmp_path) -> None:
    """A guesser spreading attempts over two nodes meets the same limit as on one."""
    from realtime.app import create_app
    from tests.nodes import redis_url

    with redis_url() as shared:
        settings = make_settings(database_url, tmp_path, redis_url=shared, login_max_failures_per_account=3)
        node_a = ApiClient(await aiohttp_client(create_app(settings)))
        node_b = ApiClient(await aiohttp_client(create_app(settings)))
        email = f"spread-{uuid.uuid4().hex[:8]}@example.com"
        await register_and_login(node_a, email)
        for node in (node_a, node_b, node_a):
            status, _ = await node.call("POST", "/auth/login", json={"email": email, "password": "guess-pw"})
            assert status == 401
        status, body = await node_b.call("POST", "/auth/login", json={"email": email, "password": "s3cret-pass"})
        assert status == 429 and body["error"]["code"] == "rate_limited"
        # Another account on the same nodes is not affected.
        other = f"other-{uuid.uuid4().hex[:8]}@example.com"
        await register_and_login(node_b, other)


# --- registration floods (issue 12, item 7) ------------------------------------------------------


async def _flood_while_logging_in(
    api: ApiClient, bodies: list[dict[str, Any]], headers: list[dict[str, str]], logins: int = 13
) -> tuple[list[tuple[int, str | None]], list[int]]:
    """Send every registration at once (no account needed); as soon as the server turns one away (it is
    saturated), ``logins`` legitimate users log in. Answers the flood's (status, Retry-After) and the
    logins' statuses."""
    import asyncio

    import aiohttp

    users = [await api.user() for _ in range(logins)]
    saturated = asyncio.Event()
    url = str(api.http.make_url("/api/v1/auth/register"))

    async def one(session: aiohttp.ClientSession, body: dict[str, Any], extra: dict[str, str]) -> tuple[int, Any]:
        async with session.post(url, json=body, headers=extra) as resp:
            await resp.read()
            if resp.status >= 429:
                saturated.set()
            return resp.status, resp.headers.get("Retry-After")

    async def login(user: Actor) -> int:
        resp = await api.http.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
        await resp.read()
        return resp.status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        flood = [asyncio.ensure_future(one(session, b, h)) for b, h in zip(bodies, headers, strict=True)]
        try:
            await asyncio.wait_for(saturated.wait(), timeout=30)
            statuses = list(await asyncio.gather(*(login(u) for u in users)))
            answers = list(await asyncio.gather(*flood))
        finally:
            for task in flood:
                task.cancel()
    return answers, statuses


def _flood_bodies(n: int) -> list[dict[str, Any]]:
    tag = uuid.uuid4().hex[:8]
    return [{"email": f"bot{i}-{tag}@example.com", "password": "bot-password", "display_name": "bot"} for i in range(n)]


async def test_a_registration_flood_from_one_address_is_limited_and_logins_go_on(
    aiohttp_client, database_url, tmp_path
) -> None:
    """100 concurrent registrations from one address made 12 of 13 logins answer 503 (the hash queue was
    full). Now the address gets 429 with Retry-After past its limit, and every login succeeds."""
    from realtime.app import create_app

    settings = make_settings(
        database_url, tmp_path, redis_url=None, register_max_per_address=10,
        argon2_time_cost=2, argon2_memory_kib=19456,  # the real cost: a flood must really fill the queue
    )  # fmt: skip
    api = ApiClient(await aiohttp_client(create_app(settings)))
    bodies = _flood_bodies(100)
    answers, logins = await _flood_while_logging_in(api, bodies, [{}] * len(bodies))
    assert logins == [200] * 13
    statuses = [status for status, _ in answers]
    assert statuses.count(201) == 10 and statuses.count(429) == 90, sorted(statuses)
    assert all(retry is not None and int(retry) > 0 for status, retry in answers if status == 429)
    # The limit is per address: someone else still registers.
    status, _ = await api.call(
        "POST", "/auth/register", json={"email": f"late-{uuid.uuid4().hex[:6]}@example.com",
                                        "password": "s3cret-pass", "display_name": "Late"},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )  # fmt: skip
    assert status == 429  # X-Forwarded-For is not trusted by default: still the flooding address


async def test_registrations_from_many_addresses_leave_hashing_capacity_for_logins(
    aiohttp_client, database_url, tmp_path
) -> None:
    """A flood spread over 100 addresses meets no per-address limit, but registrations may hold only their
    share of the password-hash queue: they get 503 past it, while every login goes through."""
    from realtime.app import create_app

    settings = make_settings(
        database_url, tmp_path, redis_url=None, trust_forwarded_for=True, register_max_per_address=30,
        argon2_time_cost=2, argon2_memory_kib=19456,
    )  # fmt: skip
    api = ApiClient(await aiohttp_client(create_app(settings)))
    bodies = _flood_bodies(100)
    # Behind a proxy: the last X-Forwarded-For entry is the one the proxy wrote; a client's own entries
    # before it (here "198.51.100.1", the same in every request) are not what is counted.
    headers = [{"X-Forwarded-For": f"198.51.100.1, 10.{i // 250}.{i % 250}.1"} for i in range(len(bodies))]
    answers, logins = await _flood_while_logging_in(api, bodies, headers)
    assert logins == [200] * 13
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {201, 503} and 503 in statuses and 201 in statuses, sorted(statuses)
    assert all(retry == "1" for status, retry in answers if status == 503)


async def test_with_redis_the_registration_limit_holds_across_nodes(aiohttp_client, database_url, tmp_path) -> None:
    from realtime.app import create_app
    from tests.nodes import redis_url

    with redis_url() as shared:
        settings = make_settings(
            database_url, tmp_path, redis_url=shared, trust_forwarded_for=True, register_max_per_address=3
        )
        node_a = ApiClient(await aiohttp_client(create_app(settings)))
        node_b = ApiClient(await aiohttp_client(create_app(settings)))
        # A fresh address per run (the shared Redis outlives the test); an IPv6 client counts per /64.
        net = f"2001:db8:{uuid.uuid4().int % 65536:x}:{uuid.uuid4().int % 65536:x}"
        answers = []
        for n, node in enumerate((node_a, node_b, node_a, node_b)):
            body = {"email": f"multi{n}-{uuid.uuid4().hex[:6]}@example.com", "password": "s3cret-pass",
                    "display_name": "M"}  # fmt: skip
            status, reply = await node.call("POST", "/auth/register", json=body,
                                            headers={"X-Forwarded-For": f"{net}::{n + 1}"})  # fmt: skip
            answers.append((status, reply))
        assert [status for status, _ in answers] == [201, 201, 201, 429]
        assert answers[-1][1]["error"]["code"] == "rate_limited"
