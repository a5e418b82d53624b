"""Quizzes in the browser: a learner takes a quiz twice (the limit), answering every kind of question but code,
and sees the scores; the course owner sees how each question went."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from tests.browser.conftest import OpenPage, WebServer, fits_phone, log_in, rest

VIDEO = {"title": "L1", "media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 60.0}


def test_a_learner_takes_a_quiz_within_its_attempts(
    open_page: OpenPage, web_server: WebServer, screenshots: Path
) -> None:
    teacher = web_server.user("Quizzing Quinn", role="instructor")
    learner = web_server.user("Answering Ann")
    token = teacher.token()
    status, course = rest(web_server.url, "POST", "/courses", {"title": "Quizzed in the browser"}, token)
    assert status == 201
    rest(web_server.url, "POST", f"/courses/{course['id']}/lectures", VIDEO, token)
    assert rest(web_server.url, "POST", f"/courses/{course['id']}/publish", None, token)[0] == 200
    quiz = {
        "title": "Capitals check",
        "attempts_allowed": 2,
        "results_visible": True,
        "questions": [
            {"kind": "single", "prompt": "Capital of France?", "points": 1,
             "options": [{"text": "Lyon", "correct": False}, {"text": "Paris", "correct": True}]},
            {"kind": "multiple", "prompt": "Which are prime?", "points": 2,
             "options": [{"text": "2", "correct": True}, {"text": "4", "correct": False},
                         {"text": "7", "correct": True}]},
            {"kind": "true_false", "prompt": "Water boils at 100 °C at sea level.", "answer": True, "points": 1},
            {"kind": "short", "prompt": "Largest ocean?", "accepted": ["Pacific"], "points": 1},
            {"kind": "numeric", "prompt": "Pi to two decimals?", "answer": 3.14, "tolerance": 0.005, "points": 1},
        ],
    }  # fmt: skip
    status, made = rest(web_server.url, "POST", f"/courses/{course['id']}/quizzes", quiz, token)
    assert status == 201, made
    assert rest(web_server.url, "POST", f"/courses/{course['id']}/enroll", None, learner.token())[0] == 201

    page = open_page()
    log_in(page, learner)
    page.goto(f"/courses/{course['id']}")
    page.get_by_role("list", name="Quizzes").get_by_role("link", name="Capitals check").click()
    page.get_by_role("button", name="Start attempt").click()
    attempt = page.get_by_role("form", name="Attempt 1")
    attempt.get_by_role("group", name="1. Capital of France?").get_by_label("Paris").check()
    primes = attempt.get_by_role("group", name="2. Which are prime?")
    primes.get_by_label("2", exact=True).check()
    primes.get_by_label("7", exact=True).check()
    attempt.get_by_role("group", name="3. Water boils").get_by_label("True").check()
    attempt.get_by_label("Answer to question 4").fill("pacific")
    attempt.get_by_label("Answer to question 5").fill("3.14")
    attempt.get_by_role("button", name="Save answers").click()
    expect(page.get_by_role("status").filter(has_text="Answers saved.")).to_be_visible()
    page.screenshot(path=screenshots / "quiz-attempt-desktop.png", full_page=True)
    attempt.get_by_role("button", name="Submit answers").click()
    tried = page.get_by_role("list", name="Your attempts")
    expect(tried.get_by_text("Attempt 1: 6 of 6 points")).to_be_visible()

    page.get_by_role("button", name="Start another attempt").click()
    page.get_by_role("form", name="Attempt 2").get_by_role("button", name="Submit answers").click()
    expect(tried.get_by_text("Attempt 2: 0 of 6 points")).to_be_visible()
    expect(page.get_by_text("You have used every attempt this quiz allows.")).to_be_visible()
    page.screenshot(path=screenshots / "quiz-results-desktop.png", full_page=True)

    desk = open_page()
    log_in(desk, teacher)
    desk.goto(f"/quizzes/{made['id']}")
    table = desk.get_by_role("table", name="Per question")
    # Answered once (the second attempt left it blank), right that time.
    cells = table.get_by_role("row").filter(has_text="Capital of France?").get_by_role("cell")
    expect(cells).to_have_text(["1", "100%"])


def test_a_quiz_attempt_fits_a_phone(open_page: OpenPage, web_server: WebServer, screenshots: Path) -> None:
    teacher = web_server.user("Phone Quizzer", role="instructor")
    learner = web_server.user("Phone Taker")
    token = teacher.token()
    _, course = rest(web_server.url, "POST", "/courses", {"title": "Quiz on a phone"}, token)
    rest(web_server.url, "POST", f"/courses/{course['id']}/lectures", VIDEO, token)
    rest(web_server.url, "POST", f"/courses/{course['id']}/publish", None, token)
    quiz = {"title": "Small screen", "questions": [
        {"kind": "single", "prompt": "A rather long question that has to wrap on a narrow phone screen?",
         "points": 1, "options": [{"text": "Yes, it wraps", "correct": True}, {"text": "No", "correct": False}]},
        {"kind": "short", "prompt": "One word?", "accepted": ["word"], "points": 1},
    ]}  # fmt: skip
    _, made = rest(web_server.url, "POST", f"/courses/{course['id']}/quizzes", quiz, token)
    rest(web_server.url, "POST", f"/courses/{course['id']}/enroll", None, learner.token())
    page = open_page(phone=True)
    log_in(page, learner)
    page.goto(f"/quizzes/{made['id']}")
    page.get_by_role("button", name="Start attempt").click()
    expect(page.get_by_role("form", name="Attempt 1")).to_be_visible()
    page.screenshot(path=screenshots / "quiz-attempt-phone.png", full_page=True)
    fits_phone(page)
