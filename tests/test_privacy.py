"""The user's own data (core_api/privacy/): the registry covers the schema, an export holds every row, a
deletion leaves no personal data. Against real Postgres, through the API as a user does it."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

from core_api.context import CORE
from core_api.privacy.registry import NOT_PERSONAL, REGISTRY
from realtime.app import create_app
from tests.chat_helpers import make_room, open_tab
from tests.conftest import Actor, ApiClient, make_settings

VIDEO = {"title": "L1", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}
PERSONAL_NAMES = {"email", "display_name", "address", "user_agent"}


async def schema_columns(api: ApiClient) -> set[tuple[str, str]]:
    """Columns that look personal: foreign keys to users, and uuid columns named like a user reference, and
    columns named like personal data."""
    pool = api.app[CORE].pool
    fks = await pool.fetch(
        """SELECT kcu.table_name, kcu.column_name
             FROM information_schema.table_constraints tc
             JOIN information_schema.key_column_usage kcu
               ON tc.constraint_name = kcu.constraint_name AND tc.table_schema = kcu.table_schema
             JOIN information_schema.constraint_column_usage ccu
               ON ccu.constraint_name = tc.constraint_name AND ccu.table_schema = tc.table_schema
            WHERE tc.constraint_type = 'FOREIGN KEY' AND ccu.table_name = 'users' AND tc.table_schema = 'public'"""
    )
    named = await pool.fetch(
        """SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = 'public' AND table_name <> 'users'
              AND (column_name = ANY($1::text[]) OR column_name ~ '(^|_)(user|author|actor|owner|host)_id$'
                   OR column_name ~ '_by$')""",
        sorted(PERSONAL_NAMES),
    )
    return {(r["table_name"], r["column_name"]) for r in [*fks, *named]}


async def test_every_personal_column_of_the_schema_is_in_the_registry(api: ApiClient) -> None:
    listed = {(p.table, p.column) for p in REGISTRY} | {(p.table, c) for p in REGISTRY for c in p.also}
    missing = await schema_columns(api) - listed - set(NOT_PERSONAL)
    assert not missing, f"personal columns not in core_api/privacy/registry.py: {sorted(missing)}"
    tables = {r["table_name"] for r in await api.app[CORE].pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )}  # fmt: skip
    assert {p.table for p in REGISTRY} <= tables  # no entry for a table that is gone


async def lived_in(api: ApiClient, user: Actor) -> dict[str, Any]:
    """A user with rows in many tables: a session, an enrollment and progress, a chat message and a reaction,
    a community membership, a notification."""
    teacher = await api.user("instructor")
    status, course = await api.call("POST", "/courses", teacher, json={"title": "Privacy 101"})
    assert status == 201
    status, lecture = await api.call("POST", f"/courses/{course['id']}/lectures", teacher, json=VIDEO)
    assert status == 201
    assert (await api.call("POST", f"/courses/{course['id']}/publish", teacher))[0] == 200
    assert (await api.call("POST", f"/courses/{course['id']}/enroll", user))[0] in (200, 201)
    status, _ = await api.call("PUT", f"/lectures/{lecture['id']}/progress", user, json={"position_s": 12.0})
    assert status == 200
    status, _ = await api.call(
        "POST", "/auth/login", json={"email": user.email, "password": user.password}, headers={"User-Agent": "Pixel"}
    )
    assert status == 200
    status, community = await api.call("POST", "/communities", teacher, json={"name": f"Club {uuid.uuid4().hex[:6]}"})
    assert status == 201
    assert (await api.call("POST", f"/communities/{community['id']}/join", user))[0] in (200, 201, 204)
    room = await make_room(api, teacher, user)
    tab = await open_tab(api, user)
    try:
        await tab.join(room)
        message = await tab.send(room, "my words, my data")
        await tab.ok("chat:react", {"room_id": room, "message_id": message["id"], "emoji": "👍", "on": True})
    finally:
        await tab.close()
    await api.app[CORE].pool.execute(
        "INSERT INTO notifications (id, user_id, kind, payload) VALUES ($1, $2, 'test', '{}')",
        uuid.uuid4(),
        uuid.UUID(user.id),
    )
    return {"room": room, "message": message, "course": course}


async def counts(api: ApiClient, user_id: str) -> dict[tuple[str, str], int]:
    pool = api.app[CORE].pool
    return {
        (p.table, p.column): await pool.fetchval(
            f'SELECT count(*) FROM "{p.table}" WHERE "{p.column}" = $1', uuid.UUID(user_id)
        )
        for p in REGISTRY
    }


async def finished(api: ApiClient, user: Actor, job_id: str) -> dict[str, Any]:
    for _ in range(300):
        status, job = await api.call("GET", f"/jobs/{job_id}", user)
        assert status == 200
        if job["state"] not in ("queued", "running"):
            return dict(job)
        await asyncio.sleep(0.05)
    raise AssertionError("the export job did not finish")


async def test_an_export_holds_every_row_of_every_table_and_no_secret(api: ApiClient) -> None:
    user = await api.user()
    await lived_in(api, user)
    status, job = await api.call("POST", "/me/exports", user)
    assert status == 202 and job["kind"] == "data_export"
    job = await finished(api, user, job["id"])
    assert job["state"] == "succeeded", job
    expected = await counts(api, user.id)
    resp = await api.http.get(job["result"]["download"], headers=user.headers)
    assert resp.status == 200 and resp.content_type == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(await resp.read()))
    manifest = json.loads(archive.read("manifest.json"))
    for entry in REGISTRY:
        if not entry.export:
            continue
        name = entry.table
        rows = json.loads(archive.read(f"{name}.json"))
        assert len(rows) == expected[(entry.table, entry.column)] == manifest["tables"][name]["rows"], name
        for row in rows:
            assert "password_hash" not in row and "token_hash" not in row
    assert expected[("chat_messages", "author_id")] == 1 and expected[("sessions", "user_id")] == 1
    (me,) = json.loads(archive.read("users.json"))
    assert me["email"] == user.email
    messages = json.loads(archive.read("chat_messages.json"))
    assert messages[0]["body"] == "my words, my data"

    # Only its owner may download it; another user (or a made-up id) gets 404.
    other = await api.user()
    path = f"/me/exports/{job['id']}/download"
    assert (await api.call("GET", path, other))[0] == 404
    assert (await api.call("GET", f"/me/exports/{uuid.uuid4()}/download", user))[0] == 404


async def test_exports_are_limited_per_day(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, data_exports_per_day=1))))
    user = await api.user()
    status, job = await api.call("POST", "/me/exports", user)
    assert status == 202
    await finished(api, user, job["id"])
    status, body = await api.call("POST", "/me/exports", user)
    assert status == 429 and body["error"]["details"]["retry_after_s"] > 0


async def test_deleting_the_account_erases_personal_data_and_keeps_what_others_need(api: ApiClient) -> None:
    user = await api.user()
    world = await lived_in(api, user)
    status, job = await api.call("POST", "/me/exports", user)
    await finished(api, user, job["id"])
    before = await counts(api, user.id)
    assert before[("enrollments", "user_id")] == 1 and before[("community_members", "user_id")] == 1

    status, body = await api.call("DELETE", "/me", user, json={"password": "not mine"})
    assert status == 400 and body["error"]["details"]["field"] == "password"
    status, _ = await api.call("DELETE", "/me", user, json={"password": user.password})
    assert status == 204

    after = await counts(api, user.id)
    for entry in REGISTRY:
        if entry.on_delete == "delete":
            assert after[(entry.table, entry.column)] == 0, entry.table
    pool = api.app[CORE].pool
    row = await pool.fetchrow(
        "SELECT email, display_name, password_hash, deleted_at FROM users WHERE id = $1::uuid", user.id
    )
    assert row["email"] != user.email and row["email"].endswith("@deleted.invalid")
    assert row["display_name"] == "Deleted user" and row["password_hash"] == "!" and row["deleted_at"] is not None
    assert (
        await pool.fetchval("SELECT count(*) FROM jobs WHERE owner_id = $1::uuid AND kind = 'data_export'", user.id)
        == 0
    )
    # The message stays in the room, under "Deleted user"; the audit log keeps the deletion.
    assert await pool.fetchval("SELECT body FROM chat_messages WHERE id = $1::uuid", world["message"]["id"]) == (
        "my words, my data"
    )
    assert (
        await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'user.deleted' AND target_id = $1", user.id)
        == 1
    )
    # The account is gone for every credential: its token (even one that names no session), its password.
    assert (await api.call("GET", "/me", user))[0] == 401
    status, _ = await api.call("POST", "/auth/login", json={"email": user.email, "password": user.password})
    assert status == 401
    # The address is free again.
    status, _ = await api.call(
        "POST", "/auth/register", json={"email": user.email, "password": "a fresh start", "display_name": "Again"}
    )
    assert status == 201


async def test_messages_are_erased_too_when_asked(api: ApiClient) -> None:
    user = await api.user()
    room_host = await api.user()
    room = await make_room(api, room_host, user)
    tab = await open_tab(api, user)
    try:
        await tab.join(room)
        message = await tab.send(room, "please forget this")
    finally:
        await tab.close()
    status, _ = await api.call("DELETE", "/me", user, json={"password": user.password, "erase_messages": True})
    assert status == 204
    row = await api.app[CORE].pool.fetchrow(
        "SELECT body, deleted_at FROM chat_messages WHERE id = $1::uuid", message["id"]
    )
    assert row["body"] == "" and row["deleted_at"] is not None


async def test_the_last_administrator_cannot_leave(api: ApiClient) -> None:
    admin = await api.user("admin")
    pool = api.app[CORE].pool
    others = await pool.fetch(
        "SELECT id FROM users WHERE role = 'admin' AND deleted_at IS NULL AND id <> $1::uuid", admin.id
    )
    await pool.execute("UPDATE users SET role = 'student' WHERE id = ANY($1::uuid[])", [r["id"] for r in others])
    try:
        status, body = await api.call("DELETE", "/me", admin, json={"password": admin.password})
        assert status == 409 and "only administrator" in body["error"]["message"]
        second = await api.user("admin")
        assert (await api.call("DELETE", "/me", admin, json={"password": admin.password}))[0] == 204
        assert (await api.call("GET", "/me", second))[0] == 200
    finally:
        await pool.execute("UPDATE users SET role = 'admin' WHERE id = ANY($1::uuid[])", [r["id"] for r in others])
