"""Which browser origins may use the server: its own by default, plus STUDYHALL_CORS_ORIGINS (issue 12, CORS).

REST answers preflights for listed origins and labels its responses; Socket.IO (long-polling and
websocket) and ``/yjs`` refuse a foreign browser origin outright, since browsers do not apply CORS to
websockets. Clients that send no ``Origin`` (scripts, servers) are unaffected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import socketio

from realtime.app import create_app
from tests.chat_helpers import WAIT_S, server_url
from tests.conftest import ApiClient, make_settings

APP_ORIGIN = "https://app.example.com"
EVIL_ORIGIN = "https://evil.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.fixture
async def listed(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    """A server that lets https://app.example.com in (and, written oddly, a local dev server)."""
    settings = make_settings(database_url, tmp_path, cors_origins=f"{APP_ORIGIN}/, http://LOCALHOST:5173")
    return ApiClient(await aiohttp_client(create_app(settings)))


def own_origin(api: ApiClient) -> str:
    return server_url(api)


# --- REST -------------------------------------------------------------------------------------------------


async def test_a_listed_origin_gets_a_proper_preflight_and_labelled_responses(listed: ApiClient) -> None:
    resp = await listed.http.options("/api/v1/courses", headers={"Origin": APP_ORIGIN, **PREFLIGHT})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")} >= {
        "authorization",
        "content-type",
    }
    assert "Origin" in resp.headers.getall("Vary")
    assert int(resp.headers["Access-Control-Max-Age"]) > 0

    user = await listed.user()
    resp = await listed.http.get("/api/v1/me", headers={"Origin": APP_ORIGIN, **user.headers})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Origin" in resp.headers.getall("Vary")
    assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
    resp = await listed.http.get("/api/v1/me", headers={"Origin": "http://localhost:5173", **user.headers})
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"


async def test_other_origins_get_no_cors_and_their_preflight_is_refused(listed: ApiClient, api: ApiClient) -> None:
    for server in (listed, api):  # configured or not
        resp = await server.http.options("/api/v1/courses", headers={"Origin": EVIL_ORIGIN, **PREFLIGHT})
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "forbidden"
        assert "Access-Control-Allow-Origin" not in resp.headers
        user = await server.user()
        resp = await server.http.get("/api/v1/me", headers={"Origin": EVIL_ORIGIN, **user.headers})
        assert "Access-Control-Allow-Origin" not in resp.headers  # the browser keeps the answer from the page
        assert "Origin" in resp.headers.getall("Vary")


async def test_the_servers_own_origin_and_clients_without_origin_are_served(api: ApiClient) -> None:
    user = await api.user()
    for headers in ({"Origin": own_origin(api)}, {}):
        status, me = await api.call("GET", "/me", user, headers=headers)
        assert status == 200 and me["id"] == user.id


# --- Socket.IO ----------------------------------------------------------------------------------------------


async def test_socket_io_refuses_a_foreign_origin_on_both_transports(api: ApiClient) -> None:
    resp = await api.http.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": EVIL_ORIGIN})
    assert resp.status == 400
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await api.http.get("/socket.io/?EIO=4&transport=websocket", headers={"Origin": EVIL_ORIGIN, **UPGRADE})
    assert resp.status == 400

    user = await api.user()
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            server_url(api), auth={"token": user.token}, headers={"Origin": EVIL_ORIGIN}, wait_timeout=WAIT_S
        )


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]], ids=["websocket", "polling"])
async def test_socket_io_serves_its_own_and_listed_origins(listed: ApiClient, transports: list[str]) -> None:
    user = await listed.user()
    for origin in (own_origin(listed), APP_ORIGIN):
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(
            server_url(listed),
            auth={"token": user.token},
            headers={"Origin": origin},
            transports=transports,
            wait_timeout=WAIT_S,
        )
        try:
            assert (await client.call("no:such", {}, timeout=WAIT_S))["ok"] is False
        finally:
            await client.disconnect()
    resp = await listed.http.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": APP_ORIGIN})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


# --- /yjs -----------------------------------------------------------------------------------------------------


async def test_yjs_refuses_a_foreign_browser_origin_before_the_upgrade(listed: ApiClient) -> None:
    user = await listed.user()
    status, workspace = await listed.call("POST", "/workspaces", user, json={"name": "w", "language": "python"})
    assert status == 201
    path = f"/yjs/{workspace['id']}?token={user.token}"
    resp = await listed.http.get(path, headers={"Origin": EVIL_ORIGIN, **UPGRADE})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    for headers in ({"Origin": APP_ORIGIN}, {"Origin": own_origin(listed)}, {}):  # listed, own, not a browser
        ws = await listed.http.ws_connect(path, headers=headers)
        try:
            assert (await ws.receive(timeout=WAIT_S)).type.name == "BINARY"  # the server's sync step 1
        finally:
            await ws.close()
