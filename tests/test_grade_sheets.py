"""Bulk grades (core_api/grading/bulk.py): a CSV sheet of 10,000 rows with 50 bad ones, uploaded with tus and
applied by a job, against real Postgres."""

from __future__ import annotations

import csv
import io
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any

import openpyxl

from core_api.context import CORE
from realtime.app import create_app
from tests.conftest import Actor, ApiClient, make_settings
from tests.test_media_video import finished, upload

LEARNERS, ASSIGNMENTS = 2000, 5


async def ok(api: ApiClient, method: str, path: str, actor: Actor, **kw: Any) -> Any:
    status, body = await api.call(method, path, actor, **kw)
    assert status < 300, (method, path, status, body)
    return body


async def big_course(api: ApiClient) -> tuple[Actor, str, list[dict[str, Any]], list[str]]:
    teacher = await api.user("instructor")
    course = await ok(api, "POST", "/courses", teacher, json={"title": "Graded at scale"})
    assignments = [
        await ok(api, "POST", f"/courses/{course['id']}/assignments", teacher,
                 json={"title": f"Homework {i}", "description": "", "due_at": "2099-01-01T00:00:00Z",
                       "max_points": 10.0})
        for i in range(ASSIGNMENTS)
    ]  # fmt: skip
    tag = uuid.uuid4().hex[:8]
    emails = [f"sheet-{tag}-{i}@example.com" for i in range(LEARNERS)]
    ids = [uuid.uuid4() for _ in emails]
    pool = api.app[CORE].pool
    await pool.copy_records_to_table(
        "users",
        records=[(i, e, f"Learner {n}", "!", "student") for n, (i, e) in enumerate(zip(ids, emails, strict=True))],
        columns=["id", "email", "display_name", "password_hash", "role"],
    )  # fmt: skip
    await pool.copy_records_to_table(
        "enrollments", records=[(uuid.uuid4(), i, uuid.UUID(course["id"])) for i in ids],
        columns=["id", "user_id", "course_id"],
    )  # fmt: skip
    return teacher, course["id"], assignments, emails


def sheet(emails: list[str], assignments: list[dict[str, Any]]) -> tuple[bytes, set[int]]:
    """9,950 good rows and 50 bad ones (10 of each kind); the bad rows' numbers (the header is row 1)."""
    rows: list[list[str]] = []
    bad: set[int] = set()
    good_learners = emails[: LEARNERS - 10]
    for n, email in enumerate(good_learners):
        for k, a in enumerate(assignments):
            # the assignment by title for some rows, by id for others
            rows.append([email, a["title"] if (n + k) % 2 else a["id"], str((n + k) % 11), f"note {n}"])

    def add_bad(row: list[str]) -> None:
        rows.append(row)
        bad.add(len(rows) + 1)

    spare = emails[LEARNERS - 10 :]
    for i in range(10):
        add_bad([f"stranger-{i}@example.com", assignments[0]["title"], "5", ""])  # not enrolled
        add_bad([spare[i], "Homework that does not exist", "5", ""])  # unknown assignment
        add_bad([spare[i], assignments[0]["id"], "11", ""])  # over max_points
        add_bad([spare[i], assignments[1]["id"], "ten", ""])  # not a number
        add_bad([good_learners[i], assignments[2]["id"], "3", ""])  # a duplicate of an earlier row
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["Email", "Assignment", "Grade", "Feedback"])
    writer.writerows(rows)
    return buf.getvalue().encode(), bad


async def run(api: ApiClient, teacher: Actor, course_id: str, data: bytes, tmp_path: Path, mode: str) -> dict[str, Any]:
    path = tmp_path / f"sheet-{mode}.csv"
    path.write_bytes(data)
    upload_id = await upload(api, teacher, path)
    status, job = await api.call(
        "POST", f"/courses/{course_id}/grade-uploads", teacher, json={"upload_id": upload_id, "mode": mode}
    )
    assert status == 202, job
    return await finished(api, teacher, job["id"])


async def test_a_sheet_of_10000_rows_with_50_bad_ones(api: ApiClient, tmp_path: Path) -> None:
    teacher, course_id, assignments, emails = await big_course(api)
    data, bad = sheet(emails, assignments)
    assert data.count(b"\n") == 10_001

    # All or nothing: nothing applied, and the result file says which 50 rows are wrong.
    job = await run(api, teacher, course_id, data, tmp_path, "all_or_nothing")
    assert job["state"] == "succeeded", job
    assert (job["result"]["rows"], job["result"]["errors"], job["result"]["applied"]) == (10_000, 50, 0)
    pool = api.app[CORE].pool
    graded = (
        "SELECT count(*) FROM submissions s JOIN assignments a ON a.id = s.assignment_id"
        " WHERE a.course_id = $1::uuid AND s.grade IS NOT NULL"
    )
    assert await pool.fetchval(graded, course_id) == 0

    # The valid rows: exactly those 9,950 applied in one go; the file lists exactly the 50 bad rows.
    job = await run(api, teacher, course_id, data, tmp_path, "valid_rows")
    assert (job["result"]["errors"], job["result"]["applied"]) == (50, 9_950)
    assert await pool.fetchval(graded, course_id) == 9_950
    resp = await api.http.get(job["result"]["results"], headers=teacher.headers)
    assert resp.status == 200
    results = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(results) == 10_000
    errors = {int(r["row"]) for r in results if r["status"] == "error"}
    assert errors == bad
    messages = [r["message"] for r in results if r["status"] == "error"]
    for words in ("enrolled", "no assignment of this course", "from 0 to 10", "is not a number", "duplicate"):
        assert sum(words in m for m in messages) == 10, words  # each kind of mistake says what it is
    # A graded learner was told once, with how many grades.
    learner_id = await pool.fetchval("SELECT id FROM users WHERE email = $1", emails[0])
    notes = await pool.fetch(
        "SELECT payload FROM notifications WHERE user_id = $1 AND kind = 'grades_posted'", learner_id
    )
    assert [n["payload"]["grades"] for n in notes] == [ASSIGNMENTS]
    # The grade and feedback landed on the learner's record.
    row = await pool.fetchrow(
        "SELECT grade, feedback FROM submissions WHERE user_id = $1 AND assignment_id = $2::uuid",
        learner_id, assignments[0]["id"],
    )  # fmt: skip
    assert (row["grade"], row["feedback"]) == (0.0, "note 0")


async def test_bad_sheets_and_wrong_callers(api: ApiClient, tmp_path: Path) -> None:
    teacher = await api.user("instructor")
    other = await api.user("instructor")
    course = await ok(api, "POST", "/courses", teacher, json={"title": "Small"})
    video = {"title": "L", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}
    await ok(api, "POST", f"/courses/{course['id']}/lectures", teacher, json=video)
    await ok(api, "POST", f"/courses/{course['id']}/publish", teacher)  # others see it: they get 403, not 404
    job = await run(api, teacher, course["id"], b"name,score\nAda,3\n", tmp_path, "valid_rows")
    assert job["state"] == "failed" and "needs the columns email, assignment, grade" in job["error"]
    job = await run(api, teacher, course["id"], b"email,assignment,grade\n\xff\xfe\x00bad", tmp_path, "valid_rows")
    assert job["state"] == "failed" and "UTF-8" in job["error"]
    path = tmp_path / "ok.csv"
    path.write_bytes(b"email,assignment,grade\n")
    upload_id = await upload(api, teacher, path)
    body = {"upload_id": upload_id, "mode": "valid_rows"}
    # Someone else's upload names nothing of theirs (404); their own sheet on another's course: 403.
    theirs = await ok(api, "POST", "/courses", other, json={"title": "Theirs"})
    assert (await api.call("POST", f"/courses/{theirs['id']}/grade-uploads", other, json=body))[0] == 404
    own = {"upload_id": await upload(api, other, path), "mode": "valid_rows"}
    assert (await api.call("POST", f"/courses/{course['id']}/grade-uploads", other, json=own))[0] == 403
    status, _ = await api.call("POST", f"/courses/{course['id']}/grade-uploads", teacher, json={**body, "mode": "x"})
    assert status == 400


# --- XLSX sheets ------------------------------------------------------------------------------------


def workbook(path: Path, rows: list[list[Any]], extra: dict[str, bytes] | None = None) -> Path:
    """An .xlsx made by openpyxl (numbers as numbers, as a spreadsheet stores them); ``extra`` files are
    added to its zip afterwards."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Grades"
    for row in rows:
        sheet.append(row)
    book.create_sheet("Notes").append(["ignored: only the first sheet counts"])
    book.save(path)
    if extra:
        with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in extra.items():
                zf.writestr(name, data)
    return path


async def run_file(api: ApiClient, teacher: Actor, course_id: str, path: Path, mode: str) -> dict[str, Any]:
    upload_id = await upload(api, teacher, path)
    status, job = await api.call(
        "POST", f"/courses/{course_id}/grade-uploads", teacher, json={"upload_id": upload_id, "mode": mode}
    )
    assert status == 202, job
    return await finished(api, teacher, job["id"])


async def test_an_xlsx_sheet_with_bad_rows(api: ApiClient, tmp_path: Path) -> None:
    teacher = await api.user("instructor")
    course = await ok(api, "POST", "/courses", teacher, json={"title": "Graded from a spreadsheet"})
    homework = await ok(api, "POST", f"/courses/{course['id']}/assignments", teacher,
                        json={"title": "Essay", "description": "", "due_at": "2099-01-01T00:00:00Z",
                              "max_points": 20.0})  # fmt: skip
    learners = [await api.user("student") for _ in range(3)]
    pool = api.app[CORE].pool
    for learner in learners:
        await pool.execute(
            "INSERT INTO enrollments (id, user_id, course_id) VALUES ($1, $2::uuid, $3::uuid)",
            uuid.uuid4(), learner.id, course["id"],
        )  # fmt: skip
    path = workbook(
        tmp_path / "grades.xlsx",
        [
            ["Email", "Assignment", "Grade", "Feedback"],
            [learners[0].email, "Essay", 17, "Well argued"],  # a number cell
            [learners[1].email, homework["id"], 12.5, None],  # by id, a decimal, no feedback
            [],  # an empty row is skipped (row 4)
            ["nobody@example.com", "Essay", 10, ""],  # row 5: not enrolled
            [learners[2].email, "Essay", 21, ""],  # row 6: over max_points
            [learners[2].email, "Essay", "lots", ""],  # row 7: not a number
            [learners[0].email, "essay", 3, ""],  # row 8: a duplicate of row 2
            [learners[2].email, "Essay", 0, "See me"],  # row 9: fine (zero is a grade)
        ],
    )
    job = await run_file(api, teacher, course["id"], path, "valid_rows")
    assert job["state"] == "succeeded", job["error"]
    assert (job["result"]["rows"], job["result"]["errors"], job["result"]["applied"]) == (7, 4, 3)
    resp = await api.http.get(job["result"]["results"], headers=teacher.headers)
    results = list(csv.DictReader(io.StringIO(await resp.text())))
    assert {int(r["row"]): r["status"] for r in results} == {
        2: "applied", 3: "applied", 5: "error", 6: "error", 7: "error", 8: "error", 9: "applied"
    }  # fmt: skip
    why = {int(r["row"]): r["message"] for r in results}
    assert "enrolled" in why[5] and "from 0 to 20" in why[6] and "'lots' is not a number" in why[7]
    assert "duplicate" in why[8]
    got = await pool.fetch(
        "SELECT user_id::text, grade, feedback FROM submissions WHERE assignment_id = $1::uuid", homework["id"]
    )
    assert {(r["user_id"], r["grade"], r["feedback"]) for r in got} == {
        (learners[0].id, 17.0, "Well argued"), (learners[1].id, 12.5, None), (learners[2].id, 0.0, "See me")
    }  # fmt: skip

    # All or nothing with the same workbook: nothing more applied, the same four errors.
    job = await run_file(api, teacher, course["id"], path, "all_or_nothing")
    assert (job["result"]["errors"], job["result"]["applied"]) == (4, 0)


async def test_bad_and_oversized_workbooks_are_refused(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, grade_sheet_max_bytes=200_000)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    teacher = await api.user("instructor")
    course = await ok(api, "POST", "/courses", teacher, json={"title": "Bad workbooks"})
    header = [["email", "assignment", "grade"]]

    async def error_of(path: Path) -> str:
        job = await run_file(api, teacher, course["id"], path, "valid_rows")
        assert job["state"] == "failed", job
        return str(job["error"])

    # A zip bomb: 100 MiB of zeros packed into ~100 KB inside the workbook; refused from its directory.
    bomb = workbook(tmp_path / "bomb.xlsx", header, {"xl/media/pad.bin": bytes(100 << 20)})
    assert bomb.stat().st_size < 200_000
    assert "zip bomb" in await error_of(bomb)
    # A zip that is not a workbook; a workbook cut short; an old binary .xls.
    plain = tmp_path / "plain.xlsx"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("hello.txt", "not a spreadsheet")
    assert "not a readable XLSX workbook" in await error_of(plain)
    whole = workbook(tmp_path / "whole.xlsx", header).read_bytes()
    cut = tmp_path / "cut.xlsx"
    cut.write_bytes(whole[: len(whole) // 2])
    assert "not a readable XLSX workbook" in await error_of(cut)
    xls = tmp_path / "old.xls"
    xls.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))
    assert "old binary Excel file (.xls)" in await error_of(xls)
    # A workbook without the columns says which are missing.
    assert "missing: grade" in await error_of(workbook(tmp_path / "cols.xlsx", [["email", "assignment"]]))

    # Too big a file: refused at once (413), no job.
    big = workbook(tmp_path / "big.xlsx", header, {"xl/media/noise.bin": os.urandom(300_000)})
    upload_id = await upload(api, teacher, big)
    status, body = await api.call(
        "POST", f"/courses/{course['id']}/grade-uploads", teacher, json={"upload_id": upload_id, "mode": "valid_rows"}
    )
    assert status == 413 and "at most 200000" in body["error"]["message"]


async def test_an_xlsx_unpacking_past_the_limit_fails(aiohttp_client: Any, database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, grade_sheet_xlsx_max_unpacked_bytes=50_000)
    api = ApiClient(await aiohttp_client(create_app(settings)))
    teacher = await api.user("instructor")
    course = await ok(api, "POST", "/courses", teacher, json={"title": "Big workbook"})
    rows: list[list[Any]] = [["email", "assignment", "grade"]]
    rows += [[f"learner{i}@example.com", "Essay", i % 10] for i in range(2000)]
    job = await run_file(api, teacher, course["id"], workbook(tmp_path / "many.xlsx", rows), "valid_rows")
    assert job["state"] == "failed" and "more than the 50000 allowed" in job["error"], job
