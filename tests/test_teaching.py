"""Teacher verification (core_api/teaching/): a learner applies, an admin decides, the role follows.
Against real Postgres, through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core_api.context import CORE
from realtime.app import create_app
from tests.conftest import ApiClient, make_settings

QUALIFIED = {
    "qualifications": "Ten years teaching algorithms at a university; I wrote two textbooks on graphs.",
    "links": ["https://example.com/me"],
}


async def test_an_approved_learner_becomes_an_instructor_and_everyone_is_told(api: ApiClient) -> None:
    learner, admin = await api.user(), await api.user("admin")
    status, application = await api.call("POST", "/teacher-applications", learner, json=QUALIFIED)
    assert status == 201 and application["state"] == "pending" and application["email"] is None
    # The admins hear of it (the longest-standing ones, at most STUDYHALL_TEACHER_APPLICATION_NOTIFY_MAX: the
    # test database holds every test's admins, so count the notifications rather than look in one inbox).
    told = await api.app[CORE].pool.fetchval(
        "SELECT count(*) FROM notifications WHERE kind = 'teacher_application' AND payload->>'application_id' = $1",
        application["id"],
    )
    assert 1 <= told <= api.app[CORE].settings.teacher_application_notify_max
    # The queue, oldest first, page by page (the full suite's database holds every test's applications).
    queued: list[dict[str, Any]] = []
    cursor = ""
    while True:
        status, page = await api.call("GET", f"/teacher-applications?limit=100{cursor}", admin)
        assert status == 200
        queued += page["items"]
        if not page.get("next_cursor"):
            break
        cursor = f"&cursor={page['next_cursor']}"
    (mine,) = [a for a in queued if a["id"] == application["id"]]
    assert mine["email"] == learner.email
    # Instructors may not create courses before; the learner may not decide on their own application.
    assert (await api.call("POST", "/courses", learner, json={"title": "Mine"}))[0] == 403
    status, _ = await api.call(
        "POST", f"/teacher-applications/{application['id']}/decision", learner, json={"decision": "approve"}
    )
    assert status == 403

    status, decided = await api.call(
        "POST", f"/teacher-applications/{application['id']}/decision", admin,
        json={"decision": "approve", "note": "Welcome aboard"},
    )  # fmt: skip
    assert status == 200 and decided["state"] == "approved"
    assert (await api.call("GET", "/me", learner))[1]["role"] == "instructor"
    assert (await api.call("POST", "/courses", learner, json={"title": "Graphs"}))[0] == 201
    status, notes = await api.call("GET", "/me/notifications?limit=50", learner)
    kinds = {n["kind"]: n["payload"] for n in notes["items"]}
    assert kinds["teacher_application_decided"]["state"] == "approved" and "role_changed" in kinds
    # Decided once; the audit log has it.
    status, _ = await api.call(
        "POST", f"/teacher-applications/{application['id']}/decision", admin, json={"decision": "reject"}
    )
    assert status == 409
    status, log = await api.call("GET", f"/audit?actor_id={admin.id}&action=teacher_application", admin)
    assert [e["action"] for e in log["items"]] == ["teacher_application.approved"]
    # An instructor does not apply again.
    assert (await api.call("POST", "/teacher-applications", learner, json=QUALIFIED))[0] == 409


async def test_one_pending_at_a_time_and_a_wait_after_a_rejection(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = ApiClient(
        await aiohttp_client(create_app(make_settings(database_url, tmp_path, teacher_reapply_after_s=3600)))
    )
    learner, admin = await api.user(), await api.user("admin")
    status, first = await api.call("POST", "/teacher-applications", learner, json=QUALIFIED)
    assert status == 201
    assert (await api.call("POST", "/teacher-applications", learner, json=QUALIFIED))[0] == 409
    status, rejected = await api.call(
        "POST", f"/teacher-applications/{first['id']}/decision", admin,
        json={"decision": "reject", "note": "Please add a link to your teaching"},
    )  # fmt: skip
    assert status == 200 and rejected["state"] == "rejected"
    status, mine = await api.call("GET", "/me/teacher-applications", learner)
    assert mine["items"][0]["note"] == "Please add a link to your teaching"
    assert (await api.call("GET", "/me", learner))[1]["role"] == "student"
    status, body = await api.call("POST", "/teacher-applications", learner, json=QUALIFIED)
    assert status == 429 and body["error"]["details"]["retry_after_s"] > 3000


async def test_garbage_and_withdrawal(api: ApiClient) -> None:
    learner, other = await api.user(), await api.user()
    for bad in (
        {"qualifications": "too short"},
        {"qualifications": " " * 30 + "short"},
        {**QUALIFIED, "links": ["http://plain.example.com"]},
        {**QUALIFIED, "links": ["https://example.com"] * 6},
        {**QUALIFIED, "qualifications": "x" * 5001},
    ):
        assert (await api.call("POST", "/teacher-applications", learner, json=bad))[0] == 400, bad
    status, application = await api.call("POST", "/teacher-applications", learner, json=QUALIFIED)
    assert status == 201
    assert (await api.call("POST", f"/teacher-applications/{application['id']}/withdraw", other))[0] == 404
    status, withdrawn = await api.call("POST", f"/teacher-applications/{application['id']}/withdraw", learner)
    assert status == 200 and withdrawn["state"] == "withdrawn"
    assert (await api.call("POST", "/teacher-applications", learner, json=QUALIFIED))[0] == 201  # no wait
