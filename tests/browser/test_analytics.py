"""The analytics screens in the browser: a course's staff open them from the course, see the five sections with
the numbers the course has, and a learner is refused; an admin sees the platform view; a community's owner sees
its contest participation, a plain member does not."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import expect

from core_api.context import CORE
from tests.browser.conftest import OpenPage, WebServer, log_in, rest


def lecture(title: str) -> dict[str, object]:
    return {"title": title, "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}


def test_the_owner_reads_the_course_analytics(open_page: OpenPage, web_server: WebServer, screenshots: Path) -> None:
    teacher = web_server.user("Counting Carla", role="instructor")
    learners = [web_server.user(f"Viewer {i}") for i in range(3)]
    token = teacher.token()
    status, course = rest(web_server.url, "POST", "/courses", {"title": "Measured in the browser"}, token)
    assert status == 201
    lectures = [rest(web_server.url, "POST", f"/courses/{course['id']}/lectures", lecture(t), token)[1]
                for t in ("Welcome", "Deep dive")]  # fmt: skip
    assert rest(web_server.url, "POST", f"/courses/{course['id']}/publish", None, token)[0] == 200
    body = {"title": "Essay", "description": "", "due_at": "2099-01-01T00:00:00Z", "max_points": 10.0}
    status, essay = rest(web_server.url, "POST", f"/courses/{course['id']}/assignments", body, token)
    assert status == 201
    # Each learner enrolls and plays the first lecture to a different point (the test server counts playback up
    # to 1000x real time as watched); the first also plays the second one through. Each hands in the essay.
    for i, learner in enumerate(learners):
        lt = learner.token()
        assert rest(web_server.url, "POST", f"/courses/{course['id']}/enroll", None, lt)[0] == 201
        for lec, until in ((lectures[0], (20.0, 45.0, 60.0)[i]), *(((lectures[1], 60.0),) if i == 0 else ())):
            assert rest(web_server.url, "PUT", f"/lectures/{lec['id']}/progress", {"position_s": 0.0}, lt)[0] == 200
            time.sleep(0.1)  # 0.1 s of real time: up to 100 s of media at the test rate
            status, out = rest(web_server.url, "PUT", f"/lectures/{lec['id']}/progress", {"position_s": until}, lt)
            assert status == 200 and out["lecture"]["watched_s"] == until, out
        status, sub = rest(web_server.url, "POST", f"/assignments/{essay['id']}/submissions", {"body": "x"}, lt)
        assert status == 201
        grade = {"grade": (4.0, 7.5, 9.0)[i]}
        assert rest(web_server.url, "PUT", f"/submissions/{sub['id']}/grade", grade, token)[0] == 200

    page = open_page()
    log_in(page, teacher)
    page.goto(f"/courses/{course['id']}/edit")
    page.get_by_role("link", name="Analytics", exact=True).click()
    expect(page.get_by_role("heading", name="Analytics", exact=True)).to_be_visible()
    for name in ("Enrollments", "Active learners", "Completion by lecture", "Watch time", "Scores"):
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    totals = page.get_by_label("Totals")
    expect(totals).to_contain_text("Enrolled3")
    expect(totals).to_contain_text("Active today3")
    funnel = page.get_by_role("table", name="Completion by lecture")
    welcome = funnel.get_by_role("row").filter(has_text="1. Welcome")
    # Welcome: opened by 3; completed (90 % of it) by the one who played all 60 s.
    expect(welcome.get_by_role("cell")).to_have_text(["3", "1", "33%"])
    expect(funnel.get_by_role("row").filter(has_text="2. Deep dive").get_by_role("cell")).to_have_text(
        ["1", "1", "33%"]
    )
    expect(page.get_by_role("img", name="Enrollments per day: 3 new in 30 days", exact=False)).to_be_visible()
    watch = page.get_by_role("article", name="Watch time of Welcome")
    expect(watch).to_contain_text("2 min watched by 3 learners")  # 20 + 45 + 60 s = 125 s
    expect(watch.get_by_role("img", name="Retention of Welcome: 33% reached the last twentieth")).to_be_visible()
    scores = page.get_by_role("article", name="Scores of Essay")
    expect(
        scores.get_by_role("img", name="Score distribution of Essay: 3 graded, mean 6.83 of 10 points")
    ).to_be_visible()
    page.screenshot(path=screenshots / "analytics-course-desktop.png", full_page=True)

    # The 7-day window redraws the series.
    page.get_by_label("Period").select_option("7")
    expect(page.get_by_role("img", name="Enrollments per day: 3 new in 7 days", exact=False)).to_be_visible()

    phone = open_page(phone=True)
    log_in(phone, teacher)
    phone.goto(f"/courses/{course['id']}/analytics")
    expect(phone.get_by_role("heading", name="Scores", exact=True)).to_be_visible()
    phone.screenshot(path=screenshots / "analytics-course-phone.png", full_page=True)

    learner_page = open_page()
    log_in(learner_page, learners[1])
    learner_page.goto(f"/courses/{course['id']}/analytics")
    expect(learner_page.get_by_role("alert")).to_contain_text("owner")


def test_an_admin_reads_the_platform_analytics(open_page: OpenPage, web_server: WebServer, screenshots: Path) -> None:
    admin = web_server.user("Platform Pat", role="admin")
    page = open_page(phone=False)
    log_in(page, admin)
    page.goto("/admin")
    page.get_by_role("link", name="Analytics", exact=True).click()
    expect(page.get_by_role("heading", name="Platform analytics")).to_be_visible()
    expect(page.get_by_label("Totals")).to_contain_text("Users")
    expect(page.get_by_role("heading", name="Enrollments", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Active learners", exact=True)).to_be_visible()
    page.screenshot(path=screenshots / "analytics-admin-desktop.png", full_page=True)


def test_a_community_admin_sees_contest_participation(
    open_page: OpenPage, web_server: WebServer, screenshots: Path
) -> None:
    owner = web_server.user("Club Owner", role="instructor")
    members = [web_server.user(f"Club Member {i}") for i in range(3)]
    token = owner.token()
    status, community = rest(web_server.url, "POST", "/communities", {"name": f"Club {uuid.uuid4().hex[:8]}"}, token)
    assert status == 201
    for member in members:
        body = {"user_id": member.id}
        assert rest(web_server.url, "POST", f"/communities/{community['id']}/members", body, token)[0] == 201
    now = datetime.now(UTC)
    war = {
        "title": "Friday war", "organizer_id": community["id"], "communities": [community["id"]],
        "problems": [{"title": "P", "tests": [{"stdin": "", "expected_output": "1"}]}],
        "starts_at": (now - timedelta(hours=1)).isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat(),
    }  # fmt: skip
    status, contest = rest(web_server.url, "POST", "/contests", war, token)
    assert status == 201, contest
    # Two members submit (stored as the judge stores verdicts; no sandbox needed): 3 submissions, 1 accepted.
    for member, verdict in ((members[0], "wrong_answer"), (members[0], "accepted"), (members[1], "wrong_answer")):
        insert = web_server.app[CORE].pool.execute(
            "INSERT INTO contest_submissions (id, contest_id, problem_id, user_id, community_id, language,"
            " source, submitted_at, verdict, judged_at) VALUES ($1, $2, $3, $4, $5, 'python', 'print(1)', now(),"
            " $6, now())",
            uuid.uuid4(), uuid.UUID(contest["id"]), uuid.UUID(contest["problems"][0]["id"]),
            uuid.UUID(member.id), uuid.UUID(community["id"]), verdict,
        )  # fmt: skip
        web_server.run(insert)

    page = open_page()
    log_in(page, owner)
    page.goto(f"/communities/{community['id']}")
    table = page.get_by_role("table", name="Contest participation")
    row = table.get_by_role("row").filter(has_text="Friday war")
    # 2 of the 4 members (the owner is one) took part.
    expect(row.get_by_role("cell")).to_have_text(["2 (50%)", "3", "1", "Not final yet"])
    page.screenshot(path=screenshots / "analytics-community-desktop.png", full_page=True)

    member_page = open_page()
    log_in(member_page, members[2])
    member_page.goto(f"/communities/{community['id']}")
    expect(member_page.get_by_role("heading", name="Members")).to_be_visible()
    expect(member_page.get_by_role("heading", name="Contest participation")).to_have_count(0)
