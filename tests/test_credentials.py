"""Credentials that travel in URLs, and who may read /metrics (issue 12, item 15).

- ``POST /api/v1/auth/ws-ticket`` hands out a ticket that opens one ``/yjs`` connection, for a few
  seconds, on any node (Redis when scaled), and is good for nothing else; ``?token=`` keeps working.
- The access log of ``studyhall serve`` shows ``ticket=[redacted]``, ``token=[redacted]`` and
  ``sid=[redacted]``, never the values.
- ``/metrics`` is served on the public port only with ``STUDYHALL_METRICS_TOKEN`` (and then only to its
  bearer), or on a listener of its own (``STUDYHALL_METRICS_PORT``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from realtime.app import create_app
from tests.collab_helpers import create_workspace
from tests.conftest import TEST_JWT_SECRET, Actor, ApiClient, make_settings
from tests.nodes import Node, cluster, free_port, redis_url, register, rest
from tests.yclient import YClient

METRICS_TOKEN = "metrics-token-" + "s" * 20


@pytest.fixture
async def clients() -> AsyncIterator[list[YClient]]:
    made: list[YClient] = []
    yield made
    for client in made:
        await client.close()


async def editor(clients: list[YClient], base: str, workspace_id: str, token: str | None, **query: str) -> YClient:
    client = YClient()
    clients.append(client)
    await client.connect(base, workspace_id, token, **query)
    return client


def base_of(api: ApiClient) -> str:
    return str(api.http.make_url("")).rstrip("/")


async def ticket_for(api: ApiClient, actor: Actor) -> str:
    status, body = await api.call("POST", "/auth/ws-ticket", actor)
    assert status == 200, body
    assert body["expires_in"] == 20  # STUDYHALL_WS_TICKET_TTL_S
    return str(body["ticket"])


# --- tickets ------------------------------------------------------------------------------------------


async def test_a_ticket_opens_one_yjs_connection(api: ApiClient, clients: list[YClient]) -> None:
    user = await api.user()
    status, workspace = await api.call("POST", "/workspaces", user, json={"name": "w", "language": "python"})
    assert status == 201
    ticket = await ticket_for(api, user)

    first = await editor(clients, base_of(api), workspace["id"], None, ticket=ticket)
    await first.wait_synced()
    again = await editor(clients, base_of(api), workspace["id"], None, ticket=ticket)
    code, reason = await again.wait_closed()
    assert (code, "already used" in reason) == (4401, True)
    assert first.ws is not None and not first.ws.closed  # the first connection is unaffected

    legacy = await editor(clients, base_of(api), workspace["id"], user.token)  # ?token= still works (API.md)
    await legacy.wait_synced()


async def test_a_ticket_is_good_for_nothing_else_and_nothing_else_is_a_ticket(
    api: ApiClient, clients: list[YClient]
) -> None:
    user = await api.user()
    status, workspace = await api.call("POST", "/workspaces", user, json={"name": "w", "language": "python"})
    assert status == 201
    ticket = await ticket_for(api, user)
    status, _ = await api.call("GET", "/me", headers={"Authorization": f"Bearer {ticket}"})
    assert status == 401  # not an access token

    now = int(time.time())
    expired = jwt.encode(
        {"sub": user.id, "typ": "ws_ticket", "jti": uuid.uuid4().hex, "iat": now - 60, "exp": now - 30},
        TEST_JWT_SECRET,
        algorithm="HS256",
    )
    for bad, why in ((user.token, "invalid"), (expired, "expired"), ("garbage", "invalid")):
        client = await editor(clients, base_of(api), workspace["id"], None, ticket=bad)
        code, reason = await client.wait_closed()
        assert code == 4401 and why in reason, (code, reason)
    status, _ = await api.call("POST", "/auth/ws-ticket")
    assert status == 401  # only for a signed-in user


# --- scaled: tickets across nodes, and the access log ------------------------------------------------------


@pytest.fixture(scope="module")
def redis() -> Iterator[str]:
    with redis_url() as url:
        yield url


@pytest.fixture
def nodes(database_url: str, redis: str) -> Iterator[list[Node]]:
    with cluster(database_url, redis, ("a", "b"), {"STUDYHALL_LOG_LEVEL": "INFO"}) as started:
        yield started


async def access_log_shows(node: Node, *texts: str, within: float = 10) -> str:
    """The node's log once it holds every one of ``texts`` (another process writes it, each request's line when
    the request ends, in whatever order they end: polled, there is nothing to wait on)."""
    deadline = time.monotonic() + within
    while True:
        log = node.log.read_text(errors="replace")
        if all(text in log for text in texts) or time.monotonic() > deadline:
            return log
        await asyncio.sleep(0.1)


async def test_a_ticket_from_one_node_opens_one_connection_on_any_and_logs_keep_no_credentials(
    nodes: list[Node], clients: list[YClient]
) -> None:
    a, b = nodes
    user = await register(a.url)
    workspace = await create_workspace(a.url, user)
    status, body = await rest(a.url, "POST", "/auth/ws-ticket", user)
    assert status == 200
    ticket = body["ticket"]

    on_b = await editor(clients, b.url, workspace["id"], None, ticket=ticket)
    await on_b.wait_synced()
    on_a = await editor(clients, a.url, workspace["id"], None, ticket=ticket)
    assert (await on_a.wait_closed())[0] == 4401  # spent on b, and a knows it (Redis)
    legacy = await editor(clients, a.url, workspace["id"], user.token)
    await legacy.wait_synced()
    async with aiohttp.ClientSession() as session:  # a long-polling Socket.IO session: its sid is in URLs
        async with session.get(a.url + "/socket.io/?EIO=4&transport=polling") as resp:
            sid = (await resp.text()).split('"sid":"')[1].split('"')[0]
        async with session.post(f"{a.url}/socket.io/?EIO=4&transport=polling&sid={sid}", data=b"1") as resp:
            assert resp.status == 200  # Engine.IO's CLOSE: done
    for client in clients:
        await client.disconnect()  # a websocket is logged when it ends

    log_a = await access_log_shows(a, "token=[redacted]", "ticket=[redacted]", "sid=[redacted]")
    log_b = await access_log_shows(b, "ticket=[redacted]")
    assert "ticket=[redacted]" in log_a and "sid=[redacted]" in log_a
    for log in (log_a, log_b):
        assert user.token not in log
        assert ticket not in log
        assert sid not in log


# --- /metrics -------------------------------------------------------------------------------------------------


async def test_metrics_are_not_served_on_the_public_port_by_default(api: ApiClient) -> None:
    resp = await api.http.get("/metrics")
    assert resp.status == 404
    assert "STUDYHALL_METRICS_TOKEN" in (await resp.json())["error"]["message"]


async def test_metrics_ask_for_the_configured_token(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, metrics_token=METRICS_TOKEN)
    client = await aiohttp_client(create_app(settings))
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": METRICS_TOKEN}):
        resp = await client.get("/metrics", headers=headers)
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status == 200
    assert "studyhall_http_requests_total" in await resp.text()


async def test_metrics_on_their_own_listener(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    port = free_port()
    client = await aiohttp_client(create_app(make_settings(database_url, tmp_path, metrics_port=port)))
    assert (await client.get("/metrics")).status == 404  # not on the public port
    await client.get("/healthz")
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert resp.status == 200
        assert 'route="/healthz"' in await resp.text()
