"""The caller's own account (core_api/accounts/): sessions, password change, password reset by email.

Against real Postgres, through the HTTP API as a client uses it: sign in twice (two sessions), list and end
them, change the password, reset it with the link from the mail (written to the mail directory in
development, or sent to a real SMTP server: aiosmtpd on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import re
import socket
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiosmtpd.controller import Controller

from core_api.context import CORE
from core_api.mail import MAILER
from realtime.app import create_app
from tests.chat_helpers import WAIT_S, server_url
from tests.conftest import Actor, ApiClient, make_settings

NEW_PASSWORD = "a brand new passphrase"


async def sign_in(
    api: ApiClient, who: Actor, password: str | None = None, agent: str = "test-browser"
) -> dict[str, Any]:
    status, body = await api.call(
        "POST",
        "/auth/login",
        json={"email": who.email, "password": password or who.password},
        headers={"User-Agent": agent},
    )
    assert status == 200, body
    return dict(body)


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def me_status(api: ApiClient, pair: dict[str, Any]) -> int:
    status, _ = await api.call("GET", "/me", headers=bearer(pair))
    return status


async def test_sessions_are_listed_and_ending_one_stops_its_tokens_at_once(api: ApiClient) -> None:
    user = await api.user()
    laptop = await sign_in(api, user, agent="Laptop Firefox")
    phone = await sign_in(api, user, agent="Phone Chrome")
    status, listed = await api.call("GET", "/me/sessions", headers=bearer(laptop))
    assert status == 200
    by_agent = {s["user_agent"]: s for s in listed["items"]}
    assert set(by_agent) == {"Laptop Firefox", "Phone Chrome"}
    assert by_agent["Laptop Firefox"]["current"] and not by_agent["Phone Chrome"]["current"]
    assert by_agent["Phone Chrome"]["address"] == "127.0.0.1"

    status, _ = await api.call("DELETE", f"/me/sessions/{by_agent['Phone Chrome']['id']}", headers=bearer(laptop))
    assert status == 204
    # The phone's access token stops at its next request, not when it expires; its refresh token too.
    status, body = await api.call("GET", "/me", headers=bearer(phone))
    assert status == 401 and "signed out" in body["error"]["message"]
    status, _ = await api.call("POST", "/auth/refresh", json={"refresh_token": phone["refresh_token"]})
    assert status == 401
    assert await me_status(api, laptop) == 200
    # Ending it again, or someone else's session, or a garbage id: 404.
    status, _ = await api.call("DELETE", f"/me/sessions/{by_agent['Phone Chrome']['id']}", headers=bearer(laptop))
    assert status == 404
    other = await api.user()
    theirs = await sign_in(api, other)
    _, their_list = await api.call("GET", "/me/sessions", headers=bearer(theirs))
    status, _ = await api.call("DELETE", f"/me/sessions/{their_list['items'][0]['id']}", headers=bearer(laptop))
    assert status == 404
    assert await me_status(api, theirs) == 200
    status, _ = await api.call("DELETE", "/me/sessions/not-a-uuid", headers=bearer(laptop))
    assert status == 404
    # A refreshed pair stays in its session (one row, last used moved on).
    status, renewed = await api.call("POST", "/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
    assert status == 200
    _, listed = await api.call("GET", "/me/sessions", headers=bearer(renewed))
    assert [s["user_agent"] for s in listed["items"]] == ["Laptop Firefox"] and listed["items"][0]["current"]


async def test_sign_out_everywhere_else_and_logout_end_access_tokens_too(api: ApiClient) -> None:
    user = await api.user()
    here, *elsewhere = [await sign_in(api, user, agent=f"device {i}") for i in range(3)]
    status, body = await api.call("DELETE", "/me/sessions", headers=bearer(here))
    assert (status, body) == (200, {"ended": 2})
    assert [await me_status(api, pair) for pair in elsewhere] == [401, 401]
    assert await me_status(api, here) == 200
    status, _ = await api.call("POST", "/auth/logout", json={"refresh_token": here["refresh_token"]})
    assert status == 204
    assert await me_status(api, here) == 401  # logging out ends the access token as well


async def test_changing_the_password_keeps_this_session_and_ends_the_others(api: ApiClient) -> None:
    user = await api.user()
    here, there = await sign_in(api, user), await sign_in(api, user)
    status, body = await api.call(
        "POST", "/me/password", headers=bearer(here), json={"current_password": "wrong!", "new_password": NEW_PASSWORD}
    )
    assert status == 400 and body["error"]["details"]["field"] == "current_password"
    assert await me_status(api, there) == 200  # nothing changed
    status, body = await api.call(
        "POST", "/me/password", headers=bearer(here), json={"current_password": user.password, "new_password": "short"}
    )
    assert status == 400
    status, _ = await api.call(
        "POST",
        "/me/password",
        headers=bearer(here),
        json={"current_password": user.password, "new_password": NEW_PASSWORD},
    )
    assert status == 204
    assert await me_status(api, here) == 200
    assert await me_status(api, there) == 401
    status, _ = await api.call("POST", "/auth/login", json={"email": user.email, "password": user.password})
    assert status == 401
    await sign_in(api, user, NEW_PASSWORD)


async def test_wrong_current_passwords_are_limited_like_logins(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, login_max_failures_per_account=3)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    user = await api.user()
    pair = await sign_in(api, user)
    wrong = {"current_password": "not it", "new_password": NEW_PASSWORD}
    codes = [(await api.call("POST", "/me/password", headers=bearer(pair), json=wrong))[0] for _ in range(4)]
    assert codes == [400, 400, 400, 429]


def reset_link(mail: bytes) -> str:
    msg = message_from_bytes(mail)
    body = msg.get_payload(decode=True)
    assert isinstance(body, bytes)
    found = re.search(r"https?://\S+/reset-password\?token=(\S+)", body.decode())
    assert found is not None, body
    return found.group(1)


async def wait_for_mail(api: ApiClient, count: int) -> list[Path]:
    mailer = api.app[MAILER]
    for _ in range(100):
        if len(mailer.outbox()) >= count:
            break
        await asyncio.sleep(0.02)
    return list(mailer.outbox())


async def test_a_reset_link_sets_a_new_password_once_and_signs_out_everywhere(api: ApiClient) -> None:
    user = await api.user()
    before = await sign_in(api, user)
    status, known = await api.call("POST", "/auth/password-reset", json={"email": user.email.upper()})
    assert status == 202
    status, unknown = await api.call("POST", "/auth/password-reset", json={"email": "nobody-here@example.com"})
    assert (status, unknown) == (202, known)  # the same answer: nothing tells who has an account
    (mail,) = await wait_for_mail(api, 1)
    await asyncio.sleep(0.2)
    assert len(api.app[MAILER].outbox()) == 1  # nothing was sent for the unknown address
    message = message_from_bytes(mail.read_bytes())
    assert message["To"] == user.email and "Reset" in message["Subject"]
    token = reset_link(mail.read_bytes())

    status, _ = await api.call("POST", "/auth/password-reset/confirm", json={"token": token, "new_password": "short"})
    assert status == 400  # a too-short password does not spend the link
    status, _ = await api.call(
        "POST", "/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert status == 204
    assert await me_status(api, before) == 401  # whoever held a session is signed out
    await sign_in(api, user, NEW_PASSWORD)
    status, body = await api.call(
        "POST", "/auth/password-reset/confirm", json={"token": token, "new_password": "yet another passphrase"}
    )
    assert status == 400 and body["error"]["details"]["field"] == "token"  # single use
    status, _ = await api.call(
        "POST", "/auth/password-reset/confirm", json={"token": "made-up", "new_password": NEW_PASSWORD}
    )
    assert status == 400


async def test_an_expired_link_is_refused(api: ApiClient) -> None:
    user = await api.user()
    await api.call("POST", "/auth/password-reset", json={"email": user.email})
    (mail,) = await wait_for_mail(api, 1)
    token = reset_link(mail.read_bytes())
    await api.app[CORE].pool.execute(
        "UPDATE password_resets SET expires_at = now() - interval '1 second' WHERE user_id = $1::uuid", user.id
    )
    status, _ = await api.call(
        "POST", "/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert status == 400
    status, _ = await api.call("POST", "/auth/login", json={"email": user.email, "password": user.password})
    assert status == 200  # the old password still works


async def test_reset_requests_are_limited_per_address_and_mails_per_account(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(database_url, tmp_path, password_reset_max_per_account=2, password_reset_max_per_address=4)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    user = await api.user()
    answers = [await api.call("POST", "/auth/password-reset", json={"email": user.email}) for _ in range(4)]
    assert [status for status, _ in answers] == [202] * 4
    assert len({str(body) for _, body in answers}) == 1  # the mail limit changes nothing in the answer
    await wait_for_mail(api, 2)
    await asyncio.sleep(0.2)
    assert len(api.app[MAILER].outbox()) == 2
    status, body = await api.call("POST", "/auth/password-reset", json={"email": user.email})
    assert status == 429 and body["error"]["details"]["retry_after_s"] > 0
    status, _ = await api.call("POST", "/auth/password-reset", json={"email": "not an email"})
    assert status == 400


class Inbox:
    """An aiosmtpd handler keeping what it received."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Any:
    inbox = Inbox()
    with socket.socket() as probe:  # a free port (aiosmtpd checks its server by connecting to the port given)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


async def test_with_an_smtp_url_the_link_goes_through_the_mail_server(
    aiohttp_client: Any, database_url: str, tmp_path: Path, smtp_server: Any
) -> None:
    controller, inbox = smtp_server
    url = f"smtp://127.0.0.1:{controller.port}"
    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, smtp_url=url))))
    user = await api.user()
    status, _ = await api.call("POST", "/auth/password-reset", json={"email": user.email})
    assert status == 202
    for _ in range(200):
        if inbox.messages:
            break
        await asyncio.sleep(0.02)
    (mail,) = inbox.messages
    token = reset_link(mail)
    assert api.app[MAILER].outbox() == []  # nothing written to the directory
    status, _ = await api.call(
        "POST", "/auth/password-reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert status == 204


async def test_ending_a_session_closes_its_open_socket_io_connections(api: ApiClient) -> None:
    user = await api.user()
    here, there = await sign_in(api, user, agent="here"), await sign_in(api, user, agent="there")
    ended = asyncio.Event()
    theirs = socketio.AsyncClient(reconnection=False)
    theirs.on("disconnect", lambda *_: ended.set())
    mine = socketio.AsyncClient(reconnection=False)
    await theirs.connect(server_url(api), auth={"token": there["access_token"]}, transports=["websocket"])
    await mine.connect(server_url(api), auth={"token": here["access_token"]}, transports=["websocket"])
    try:
        _, listed = await api.call("GET", "/me/sessions", headers=bearer(here))
        (other,) = [s["id"] for s in listed["items"] if s["user_agent"] == "there"]
        status, _ = await api.call("DELETE", f"/me/sessions/{other}", headers=bearer(here))
        assert status == 204
        await asyncio.wait_for(ended.wait(), WAIT_S)  # closed by the server, not at its next reconnect
        assert mine.connected
        # And it cannot come back with that session's token.
        again = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await again.connect(server_url(api), auth={"token": there["access_token"]}, transports=["websocket"])
    finally:
        await mine.disconnect()
        await theirs.disconnect()


async def test_logins_and_failed_logins_are_audited(api: ApiClient) -> None:
    user, admin = await api.user(), await api.user("admin")
    status, _ = await api.call("POST", "/auth/login", json={"email": user.email, "password": "wrong guess"})
    assert status == 401
    await sign_in(api, user, agent="Audited browser")
    status, page = await api.call("GET", "/audit?action=user.login_failed&limit=10", admin)
    assert status == 200
    failed = [e for e in page["items"] if e["target_id"] == user.id]
    assert len(failed) == 1 and failed[0]["actor_id"] is None and failed[0]["details"]["address"] == "127.0.0.1"
    status, page = await api.call("GET", f"/audit?actor_id={user.id}&action=user.login", admin)
    assert [e["action"] for e in page["items"]] == ["user.login"]
    # Unknown addresses leave no entry (nothing to protect, and no way to fill the log for free).
    before = (await api.call("GET", "/audit?action=user.login_failed&limit=100", admin))[1]["items"]
    await api.call("POST", "/auth/login", json={"email": "nobody-at-all@example.com", "password": "x"})
    after = (await api.call("GET", "/audit?action=user.login_failed&limit=100", admin))[1]["items"]
    assert len(after) == len(before)
