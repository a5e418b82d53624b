"""The gradebook in the browser: the course owner sees every learner's grades, uploads a grade sheet that a
job applies (one good row, one wrong), and downloads the gradebook and the sheet's result file."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.conftest import OpenPage, WebServer, log_in, rest

VIDEO = {"title": "L1", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}


def test_the_owner_grades_from_a_sheet_and_downloads_the_gradebook(
    open_page: OpenPage, web_server: WebServer, screenshots: Path, tmp_path: Path
) -> None:
    teacher = web_server.user("Grading Grace", role="instructor")
    ada, bo = web_server.user("Ada Sheet"), web_server.user("Bo Sheet")
    token = teacher.token()
    status, course = rest(web_server.url, "POST", "/courses", {"title": "Graded in the browser"}, token)
    assert status == 201
    rest(web_server.url, "POST", f"/courses/{course['id']}/lectures", VIDEO, token)
    assert rest(web_server.url, "POST", f"/courses/{course['id']}/publish", None, token)[0] == 200
    for title in ("Essay", "Proof"):
        body = {"title": title, "description": "", "due_at": "2099-01-01T00:00:00Z", "max_points": 10.0}
        assert rest(web_server.url, "POST", f"/courses/{course['id']}/assignments", body, token)[0] == 201
    for learner in (ada, bo):
        assert rest(web_server.url, "POST", f"/courses/{course['id']}/enroll", None, learner.token())[0] == 201

    page = open_page()
    log_in(page, teacher)
    page.goto(f"/courses/{course['id']}")
    page.get_by_role("link", name="Gradebook").click()
    table = page.get_by_role("table", name="Grades of every learner")
    expect(table.get_by_role("rowheader").filter(has_text="Ada Sheet")).to_be_visible()

    sheet = tmp_path / "grades.csv"
    sheet.write_text(f"email,assignment,grade,feedback\n{ada.email},Essay,8.5,Well argued\n{bo.email},Essay,12,\n")
    page.get_by_label("Grade sheet (CSV or XLSX)").set_input_files(str(sheet))
    page.get_by_label("Apply the valid rows").check()
    page.get_by_role("button", name="Apply grade sheet").click()
    expect(page.get_by_role("status").filter(has_text="2 rows: 1 grades applied, 1 rows with errors.")).to_be_visible()
    ada_row = table.get_by_role("row").filter(has_text="Ada Sheet")
    expect(ada_row.get_by_role("cell", name="8.5 / 10")).to_be_visible()
    page.screenshot(path=screenshots / "gradebook-desktop.png", full_page=True)

    with page.expect_download() as info:
        page.get_by_role("button", name="Download the result file").click()
    results = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert [(r["email"], r["status"]) for r in results] == [(ada.email, "applied"), (bo.email, "error")]
    with page.expect_download() as info:
        page.get_by_role("button", name="Download CSV").click()
    assert "8.5" in Path(info.value.path()).read_text()
