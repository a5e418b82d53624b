"""Files attached to an assignment submission in the browser: the learner attaches one when handing in and
downloads it from their submission; the course's owner downloads it from the submissions list."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from tests.browser.conftest import OpenPage, WebServer, log_in, rest

VIDEO = {"title": "L1", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}


def test_a_learner_attaches_a_file_and_the_owner_downloads_it(
    open_page: OpenPage, web_server: WebServer, screenshots: Path, tmp_path: Path
) -> None:
    teacher = web_server.user("Attaching Teacher", role="instructor")
    learner = web_server.user("Filing Fiona")
    token = teacher.token()
    status, course = rest(web_server.url, "POST", "/courses", {"title": "Essays with files"}, token)
    assert status == 201
    rest(web_server.url, "POST", f"/courses/{course['id']}/lectures", VIDEO, token)
    assert rest(web_server.url, "POST", f"/courses/{course['id']}/publish", None, token)[0] == 200
    body = {"title": "Lab report", "description": "Attach your report.", "due_at": "2099-01-01T00:00:00Z",
            "max_points": 10.0}  # fmt: skip
    status, assignment = rest(web_server.url, "POST", f"/courses/{course['id']}/assignments", body, token)
    assert status == 201
    assert rest(web_server.url, "POST", f"/courses/{course['id']}/enroll", None, learner.token())[0] == 201

    report = tmp_path / "lab-report.pdf"
    report.write_bytes(b"%PDF-1.4\n" + b"measurements " * 500 + b"\n%%EOF\n")
    bad = tmp_path / "page.html"
    bad.write_text("<script>alert(1)</script>")

    page = open_page()
    log_in(page, learner)
    page.goto(f"/courses/{course['id']}/assignments/{assignment['id']}")
    page.get_by_label("Your answer").fill("My report is attached.")
    page.get_by_label("Attach files").set_input_files([str(report), str(bad)])
    expect(page.get_by_text("2 files to attach when you hand in.")).to_be_visible()
    page.get_by_role("button", name="Hand in").click()
    expect(page.get_by_text("Handed in.")).to_be_visible()
    # The type the server refuses is named, with why; the PDF is attached.
    expect(page.get_by_text("page.html: files of this type cannot be attached")).to_be_visible()
    mine = page.get_by_role("list", name="Your submissions")
    expect(mine.get_by_role("button", name="Download lab-report.pdf", exact=True)).to_be_visible()
    expect(mine.get_by_role("button", name="Download page.html", exact=True)).to_have_count(0)
    page.screenshot(path=screenshots / "submission-files-learner.png", full_page=True)
    with page.expect_download() as info:
        mine.get_by_role("button", name="Download lab-report.pdf", exact=True).click()
    assert Path(info.value.path()).read_bytes() == report.read_bytes()

    desk = open_page()
    log_in(desk, teacher)
    desk.goto(f"/courses/{course['id']}/assignments/{assignment['id']}")
    submission = desk.get_by_role("list", name="Submissions").get_by_role("listitem").filter(has_text="Filing Fiona")
    button = submission.get_by_role("button", name="Download lab-report.pdf", exact=True)
    expect(button).to_be_visible()
    desk.screenshot(path=screenshots / "submission-files-staff.png", full_page=True)
    with desk.expect_download() as info:
        button.click()
    assert info.value.suggested_filename == "lab-report.pdf"
    assert Path(info.value.path()).read_bytes() == report.read_bytes()
