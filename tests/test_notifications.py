"""Notifications: newest first, the unread filter and count, marking read, and privacy between users."""

from __future__ import annotations

import uuid
from typing import Any

from core_api.context import CORE
from tests.conftest import Actor, ApiClient

Json = dict[str, Any]


async def notify_by_adding(api: ApiClient, recipient: Actor, times: int) -> list[str]:
    """Give ``recipient`` ``times`` notifications, one per community they are added to; return the names."""
    owner = await api.user()
    names = []
    for _ in range(times):
        name = f"Group {uuid.uuid4().hex[:8]}"
        status, community = await api.call("POST", "/communities", owner, json={"name": name})
        assert status == 201, community
        status, body = await api.call(
            "POST", f"/communities/{community['id']}/members", owner, json={"user_id": recipient.id}
        )
        assert status == 201, body
        names.append(name)
    return names


async def all_pages(api: ApiClient, actor: Actor, query: str = "", limit: int = 2) -> list[Json]:
    items: list[Json] = []
    cursor = None
    while True:
        path = f"/me/notifications?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        status, page = await api.call("GET", path, actor)
        assert status == 200, page
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def unread(api: ApiClient, actor: Actor) -> int:
    status, body = await api.call("GET", "/me/notifications/unread-count", actor)
    assert status == 200, body
    return int(body["unread"])


async def test_newest_first_across_pages_without_duplicates(api: ApiClient) -> None:
    bob = await api.user()
    names = await notify_by_adding(api, bob, 5)
    items = await all_pages(api, bob, limit=2)
    assert len(items) == 5
    assert len({n["id"] for n in items}) == 5
    assert [n["payload"]["community_name"] for n in items] == names[::-1]
    assert [n["created_at"] for n in items] == sorted((n["created_at"] for n in items), reverse=True)
    assert all(n["kind"] == "community_added" and n["read_at"] is None for n in items)


async def test_mark_one_read_and_the_unread_filter(api: ApiClient) -> None:
    bob = await api.user()
    await notify_by_adding(api, bob, 3)
    assert await unread(api, bob) == 3
    newest = (await all_pages(api, bob))[0]

    status, got = await api.call("POST", f"/notifications/{newest['id']}/read", bob)
    assert status == 200 and got["id"] == newest["id"] and got["read_at"] is not None
    # Reading again is harmless and keeps the first read time.
    status, again = await api.call("POST", f"/notifications/{newest['id']}/read", bob)
    assert status == 200 and again["read_at"] == got["read_at"]

    assert await unread(api, bob) == 2
    unread_items = await all_pages(api, bob, "&unread=true")
    read_items = await all_pages(api, bob, "&unread=false")
    assert newest["id"] not in {n["id"] for n in unread_items} and len(unread_items) == 2
    assert [n["id"] for n in read_items] == [newest["id"]]
    assert len(await all_pages(api, bob)) == 3

    status, body = await api.call("GET", "/me/notifications?unread=maybe", bob)
    assert status == 400 and body["error"]["code"] == "invalid_input"
    status, _ = await api.call("GET", "/me/notifications?limit=0", bob)
    assert status == 400
    status, _ = await api.call("GET", "/me/notifications?cursor=not-ours", bob)
    assert status == 400


async def test_read_all_marks_only_the_callers_unread(api: ApiClient) -> None:
    bob, carol = await api.user(), await api.user()
    await notify_by_adding(api, bob, 3)
    await notify_by_adding(api, carol, 2)
    first = (await all_pages(api, bob))[0]
    await api.call("POST", f"/notifications/{first['id']}/read", bob)

    status, body = await api.call("POST", "/me/notifications/read-all", bob)
    assert status == 200 and body == {"marked": 2}
    assert await unread(api, bob) == 0
    assert await all_pages(api, bob, "&unread=true") == []
    status, body = await api.call("POST", "/me/notifications/read-all", bob)
    assert body == {"marked": 0}
    assert await unread(api, carol) == 2


async def test_other_users_notifications_are_invisible(api: ApiClient) -> None:
    bob, mallory, admin = await api.user(), await api.user(), await api.user("admin")
    await notify_by_adding(api, bob, 1)
    note = (await all_pages(api, bob))[0]

    assert await all_pages(api, mallory) == []
    assert await unread(api, mallory) == 0
    for snoop in (mallory, admin):
        status, body = await api.call("POST", f"/notifications/{note['id']}/read", snoop)
        assert status == 404 and body["error"]["code"] == "not_found"
    status, _ = await api.call("POST", f"/notifications/{uuid.uuid4()}/read", bob)
    assert status == 404
    status, _ = await api.call("POST", "/notifications/nonsense/read", bob)
    assert status == 404
    # Bob's notification is still unread after the attempts.
    assert await unread(api, bob) == 1
    status, _ = await api.call("GET", "/me/notifications")
    assert status == 401


async def test_marking_read_tells_the_users_other_clients(api: ApiClient) -> None:
    bob = await api.user()
    await notify_by_adding(api, bob, 2)
    events: list[tuple[str, dict[str, Any]]] = []

    async def record(topic: str, payload: dict[str, Any]) -> None:
        events.append((topic, payload))

    api.app[CORE].bus.subscribe(record)
    note = (await all_pages(api, bob))[0]
    await api.call("POST", f"/notifications/{note['id']}/read", bob)
    await api.call("POST", f"/notifications/{note['id']}/read", bob)  # already read: nothing to tell
    await api.call("POST", "/me/notifications/read-all", bob)
    await api.call("POST", "/me/notifications/read-all", bob)  # nothing left: nothing to tell
    assert events == [
        (f"user:{bob.id}", {"type": "notifications_read", "notification_id": note["id"], "unread": 1}),
        (f"user:{bob.id}", {"type": "notifications_read", "notification_id": None, "unread": 0}),
    ]
