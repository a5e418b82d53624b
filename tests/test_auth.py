"""Accounts and sessions: register, login, refresh rotation with reuse detection, logout, /me, limits."""

from __future__ import annotations

import uuid
from typing import Any

import jwt

from tests.conftest import TEST_JWT_SECRET, ApiClient, make_settings


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
    # The first token is spent: presenting it again is a theft signal.
    status, body = await api.call("POST", "/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert status == 401 and body["error"]["code"] == "unauthorized"
    # ...and the legitimate holder's newer token died with the family.
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
