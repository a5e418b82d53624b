"""Files attached to assignment submissions (core_api/submission_files.py), against real Postgres and the local
media store: who may attach, download and delete; types, sizes, counts and the quota; ranges and headers; the
files in the learner's data export and gone with their account."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

from core_api.context import CORE
from media.jobs import JOBS
from realtime.app import create_app
from tests.conftest import Actor, ApiClient, make_settings

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


async def ok(api: ApiClient, method: str, path: str, actor: Actor, **kw: Any) -> Any:
    status, body = await api.call(method, path, actor, **kw)
    assert status < 300, (method, path, status, body)
    return body


async def course_with_submission(api: ApiClient) -> tuple[Actor, Actor, str, str]:
    """An owner, an enrolled learner, the course and the learner's submission."""
    owner = await api.user("instructor")
    learner = await api.user("student")
    course = await ok(api, "POST", "/courses", owner, json={"title": "Essays"})
    lecture = {"title": "L", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}
    await ok(api, "POST", f"/courses/{course['id']}/lectures", owner, json=lecture)
    await ok(api, "POST", f"/courses/{course['id']}/publish", owner)
    await ok(api, "POST", f"/courses/{course['id']}/enroll", learner)
    assignment = await ok(api, "POST", f"/courses/{course['id']}/assignments", owner,
                          json={"title": "Essay", "description": "", "due_at": "2099-01-01T00:00:00Z",
                                "max_points": 10.0})  # fmt: skip
    sub = await ok(api, "POST", f"/assignments/{assignment['id']}/submissions", learner, json={"body": "See file"})
    return owner, learner, course["id"], sub["id"]


async def attach(api: ApiClient, actor: Actor | None, submission: str, name: str, data: bytes) -> tuple[int, Any]:
    resp = await api.http.post(
        f"/api/v1/submissions/{submission}/files", params={"name": name}, data=data,
        headers=actor.headers if actor else {},
    )  # fmt: skip
    return resp.status, await resp.json()


async def test_attach_download_and_who_may(api: ApiClient) -> None:
    owner, learner, _, sub = await course_with_submission(api)
    status, file = await attach(api, learner, sub, "Mé essay.pdf", PDF)
    assert status == 201, file
    assert (file["name"], file["content_type"], file["size"]) == ("Mé essay.pdf", "application/pdf", len(PDF))
    # The submission lists it, for the learner and the staff.
    for actor in (learner, owner):
        got = await ok(api, "GET", f"/submissions/{sub}", actor)
        assert [f["id"] for f in got["files"]] == [file["id"]]
        assert got["files"][0]["url"] == f"/api/v1/submission-files/{file['id']}"

    admin = await api.user("admin")
    for actor in (learner, owner, admin):
        resp = await api.http.get(file["url"], headers=actor.headers)
        assert resp.status == 200
        assert await resp.read() == PDF
        assert resp.headers["Content-Type"] == "application/pdf"
        assert resp.headers["Content-Disposition"] == (
            "attachment; filename=\"M_ essay.pdf\"; filename*=UTF-8''M%C3%A9%20essay.pdf"
        )
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"].startswith("private")
    # Range requests.
    resp = await api.http.get(file["url"], headers={**learner.headers, "Range": "bytes=100-199"})
    assert resp.status == 206 and await resp.read() == PDF[100:200]
    assert resp.headers["Content-Range"] == f"bytes 100-199/{len(PDF)}"

    # Everyone else: another learner of the course, another instructor, a stranger: 404; no token: 401.
    classmate = await api.user("student")
    await ok(api, "POST", f"/courses/{await course_of(api, sub)}/enroll", classmate)
    for actor in (classmate, await api.user("instructor"), await api.user("student")):
        resp = await api.http.get(file["url"], headers=actor.headers)
        assert resp.status == 404, actor.role
        assert (await attach(api, actor, sub, "x.pdf", PDF))[0] == 404  # and cannot attach to it
        resp = await api.http.delete(file["url"], headers=actor.headers)
        assert resp.status == 404
    assert (await api.http.get(file["url"])).status == 401
    # Staff read but neither attach nor delete (403).
    assert (await attach(api, owner, sub, "y.pdf", PDF))[0] == 403
    assert (await api.http.delete(file["url"], headers=owner.headers)).status == 403

    # The author deletes it: gone from the submission and from storage.
    path = api.app[JOBS].storage.file_path(uuid.UUID(file["id"]))
    assert path.read_bytes() == PDF
    assert (await api.http.delete(file["url"], headers=learner.headers)).status == 204
    assert (await api.http.get(file["url"], headers=learner.headers)).status == 404
    assert (await ok(api, "GET", f"/submissions/{sub}", learner))["files"] == []
    assert not path.exists()


async def course_of(api: ApiClient, sub: str) -> str:
    return str(
        await api.app[CORE].pool.fetchval(
            "SELECT a.course_id FROM submissions s JOIN assignments a ON a.id = s.assignment_id WHERE s.id = $1::uuid",
            sub,
        )
    )


async def test_types_sizes_counts_and_quota(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url, tmp_path, assignment_file_max_bytes=10_000, assignment_files_per_submission=3,
        assignment_file_quota_bytes=25_000, assignment_files_per_hour=4,
    )  # fmt: skip
    api = ApiClient(await aiohttp_client(create_app(settings)))
    _, learner, _, sub = await course_with_submission(api)
    # Types by extension; the content type is the extension's, not what the browser says.
    for name in ("page.html", "run.exe", "noext", "a.svg"):
        status, body = await attach(api, learner, sub, name, b"<script>alert(1)</script>")
        assert status == 400 and "cannot be attached" in body["error"]["message"], name
    for name in ("", "../x.pdf", "a\x00.pdf", "x" * 200 + ".pdf"):
        status, body = await attach(api, learner, sub, name, b"x")
        assert status == 400, name
    status, file = await attach(api, learner, sub, "solution.py", b"print('hi')\n")
    assert status == 201 and file["content_type"] == "text/x-python"
    resp = await api.http.get(file["url"], headers=learner.headers)
    assert resp.headers["Content-Type"].startswith("text/x-python")
    # Too big: 413 before a byte is stored.
    status, body = await attach(api, learner, sub, "big.zip", bytes(10_001))
    assert status == 413 and "at most 10000" in body["error"]["message"]
    # At most 3 files on a submission (409) ...
    assert (await attach(api, learner, sub, "b.txt", bytes(9000)))[0] == 201
    assert (await attach(api, learner, sub, "c.txt", bytes(9000)))[0] == 201
    status, body = await attach(api, learner, sub, "d.txt", b"x")
    assert status == 409 and "at most 3 files" in body["error"]["message"]
    # ... and 25,000 bytes in all for the learner (413), across submissions.
    other = await ok(api, "POST", f"/assignments/{await assignment_of(api, sub)}/submissions", learner,
                     json={"body": "again"})  # fmt: skip
    status, body = await attach(api, learner, other["id"], "e.txt", bytes(8000))
    assert status == 413 and "at most 25000" in body["error"]["message"]
    assert (await attach(api, learner, other["id"], "e.txt", bytes(6000)))[0] == 201
    # Four an hour (429).
    status, body = await attach(api, learner, other["id"], "f.txt", b"x")
    assert status == 429
    # Nothing refused was kept.
    stored = list((api.app[JOBS].storage.file_path(uuid.uuid4()).parent).iterdir())
    assert len(stored) == 4


async def assignment_of(api: ApiClient, sub: str) -> str:
    return str(await api.app[CORE].pool.fetchval("SELECT assignment_id FROM submissions WHERE id = $1::uuid", sub))


async def test_in_the_export_and_gone_with_the_account(api: ApiClient) -> None:
    _, learner, _, sub = await course_with_submission(api)
    status, file = await attach(api, learner, sub, "essay.pdf", PDF)
    assert status == 201
    status, job = await api.call("POST", "/me/exports", learner)
    assert status == 202, job
    from tests.test_media_video import finished

    done = await finished(api, learner, job["id"])
    resp = await api.http.get(done["result"]["download"], headers=learner.headers)
    archive = zipfile.ZipFile(io.BytesIO(await resp.read()))
    rows = json.loads(archive.read("submission_files.json"))
    assert [(r["id"], r["filename"]) for r in rows] == [(file["id"], "essay.pdf")]
    assert archive.read(f"submission_files/{file['id']}/essay.pdf") == PDF

    path = api.app[JOBS].storage.file_path(uuid.UUID(file["id"]))
    assert path.exists()
    status, _ = await api.call("DELETE", "/me", learner, json={"password": learner.password})
    assert status == 204
    assert not path.exists()
    assert (
        await api.app[CORE].pool.fetchval("SELECT count(*) FROM submission_files WHERE id = $1::uuid", file["id"]) == 0
    )
