"""Quizzes and the gradebook (core_api/grading/) against real Postgres: attempts within their limits, open and
close times, the time limit, shuffling, the answer key never reaching a learner, code judged by the real
sandbox, per-question statistics and the gradebook (JSON and CSV) equal to what is computed by hand."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core_api.auth import AUTH
from core_api.context import CORE
from core_api.demo import demo_id, load_demo
from core_api.grading.service import GRADING
from realtime.app import create_app
from tests.conftest import Actor, ApiClient, make_settings

VIDEO = {"title": "L", "media_kind": "video", "media_url": "https://cdn.example.com/v.mp4", "duration_s": 60.0}

# Values that appear only in answer keys: a learner's responses must never contain them.
SECRET_ACCEPTED = "Zanzibar-accepted-7f3a"
SECRET_NUMBER = 271828.1828
SECRET_TOLERANCE = 0.000123
SECRET_STDIN = "STDIN-SECRET-55e1"
SECRET_OUTPUT = "EXPECTED-OUT-93c1"
KEY_FIELDS = {"key", "accepted", "tests", "expected_output", "tolerance"}


async def course_with(
    api: ApiClient, learners: int = 1, names: list[str] | None = None
) -> tuple[Actor, str, list[Actor]]:
    """A published course, its owner and ``learners`` enrolled students (named ``names`` if given)."""
    owner = await api.user("instructor")
    status, course = await api.call("POST", "/courses", owner, json={"title": "Quizzing"})
    assert status == 201, course
    status, _ = await api.call("POST", f"/courses/{course['id']}/lectures", owner, json=VIDEO)
    assert status == 201
    status, _ = await api.call("POST", f"/courses/{course['id']}/publish", owner)
    assert status == 200
    enrolled = []
    for i in range(learners):
        learner = await api.user("student", name=names[i] if names else None)
        status, body = await api.call("POST", f"/courses/{course['id']}/enroll", learner)
        assert status == 201, body
        enrolled.append(learner)
    return owner, course["id"], enrolled


def choice(kind: str, right: list[int], n: int = 3, points: float = 1.0) -> dict[str, Any]:
    options = [{"text": f"option {i}", "correct": i in right} for i in range(n)]
    return {"kind": kind, "prompt": f"Pick ({kind})", "points": points, "options": options}


def every_kind() -> list[dict[str, Any]]:
    return [
        choice("single", [1]),
        choice("multiple", [0, 2], n=4, points=2.0),
        {"kind": "true_false", "prompt": "Water is wet", "answer": True},
        {"kind": "short", "prompt": "Island?", "accepted": [SECRET_ACCEPTED, "Unguja"], "points": 1.5},
        {"kind": "numeric", "prompt": "e times 10^5?", "answer": SECRET_NUMBER, "tolerance": SECRET_TOLERANCE},
        {
            "kind": "code",
            "prompt": "Echo",
            "language": "python",
            "starter": "print(input())",
            "tests": [{"stdin": SECRET_STDIN, "expected_output": SECRET_OUTPUT}],
        },
    ]


async def make_quiz(api: ApiClient, owner: Actor, course_id: str, **fields: Any) -> Any:
    body = {"title": "Quiz", "questions": every_kind()[:5], **fields}
    status, quiz = await api.call("POST", f"/courses/{course_id}/quizzes", owner, json=body)
    assert status == 201, quiz
    return quiz


async def start(api: ApiClient, learner: Actor, quiz_id: str, expect: int = 201) -> Any:
    status, attempt = await api.call("POST", f"/quizzes/{quiz_id}/attempts", learner)
    assert status == expect, attempt
    return attempt


async def submit(api: ApiClient, learner: Actor, attempt_id: str, answers: dict[str, Any]) -> Any:
    status, graded = await api.call("POST", f"/attempts/{attempt_id}/submit", learner, json={"answers": answers})
    assert status == 200, graded
    assert graded["state"] == "submitted"
    return graded


def key_of(quiz: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {q["kind"]: q for q in quiz["questions"]}


def right_answers(quiz: dict[str, Any]) -> dict[str, Any]:
    """The full-marks answers of the first five questions (from the staff view's key)."""
    out: dict[str, Any] = {}
    for q in quiz["questions"]:
        k = q["key"]
        if q["kind"] == "single":
            out[q["id"]] = k["correct"][0]
        elif q["kind"] == "multiple":
            out[q["id"]] = list(reversed(k["correct"]))
        elif q["kind"] in ("true_false", "numeric"):
            out[q["id"]] = k["value"]
        elif q["kind"] == "short":
            out[q["id"]] = "  zanzibar-ACCEPTED-7F3A "  # case and spaces do not matter
    return out


# --- attempts ------------------------------------------------------------------------------------


async def test_a_quiz_is_taken_twice_within_its_limits_and_refused_the_third_time(api: ApiClient) -> None:
    owner, course_id, (learner,) = await course_with(api)
    quiz = await make_quiz(api, owner, course_id, attempts_allowed=2)
    first = await start(api, learner, quiz["id"])
    assert first["number"] == 1 and first["state"] == "in_progress" and first["score"] is None
    again = await start(api, learner, quiz["id"], expect=200)  # the attempt in progress, not a new one
    assert again["id"] == first["id"]
    graded = await submit(api, learner, first["id"], right_answers(quiz))
    assert graded["score"] == graded["max_points"] == 6.5 and graded["finished_by"] == "learner"
    assert all(r["correct"] for r in graded["results"])
    status, same = await api.call("POST", f"/attempts/{first['id']}/submit", learner, json={"answers": {}})
    assert status == 200 and same["score"] == 6.5  # submitting again changes nothing
    second = await start(api, learner, quiz["id"])
    assert second["number"] == 2
    graded = await submit(api, learner, second["id"], {})
    assert graded["score"] == 0 and not any(r["answered"] for r in graded["results"])
    status, refused = await api.call("POST", f"/quizzes/{quiz['id']}/attempts", learner)
    assert status == 409 and "all 2 attempts" in refused["error"]["message"]
    status, mine = await api.call("GET", f"/quizzes/{quiz['id']}/attempts", learner)
    assert [a["score"] for a in mine["items"]] == [6.5, 0.0]


async def test_concurrent_starts_and_submits_make_one_attempt_graded_once(api: ApiClient) -> None:
    owner, course_id, (learner,) = await course_with(api)
    quiz = await make_quiz(api, owner, course_id, attempts_allowed=1)
    starts = await asyncio.gather(*(api.call("POST", f"/quizzes/{quiz['id']}/attempts", learner) for _ in range(6)))
    assert sorted(status for status, _ in starts) == [200] * 5 + [201]
    (attempt_id,) = {attempt["id"] for _, attempt in starts}
    answers = right_answers(quiz)
    submits = await asyncio.gather(
        *(api.call("POST", f"/attempts/{attempt_id}/submit", learner, json={"answers": answers}) for _ in range(4))
    )
    assert {(status, body["score"], body["submitted_at"]) for status, body in submits} == {
        (200, 6.5, submits[0][1]["submitted_at"])
    }
    status, mine = await api.call("GET", f"/quizzes/{quiz['id']}/attempts", learner)
    assert status == 200 and len(mine["items"]) == 1


async def test_answers_are_graded_by_kind_on_the_server(api: ApiClient) -> None:
    owner, course_id, (learner,) = await course_with(api)
    quiz = await make_quiz(api, owner, course_id)
    q = key_of(quiz)
    single, multiple = q["single"]["key"]["correct"][0], q["multiple"]["key"]["correct"]
    wrong_single = next(o["id"] for o in q["single"]["options"] if o["id"] != single)
    attempt = await start(api, learner, quiz["id"])
    answers = {
        q["single"]["id"]: wrong_single,
        q["multiple"]["id"]: multiple[:1],  # part of the right set scores nothing
        q["true_false"]["id"]: True,
        q["short"]["id"]: "ＵＮＧＵＪＡ",  # full-width letters: NFKC makes them "UNGUJA"
        q["numeric"]["id"]: SECRET_NUMBER + SECRET_TOLERANCE / 2,
    }
    graded = await submit(api, learner, attempt["id"], answers)
    points = {r["question_id"]: r["points"] for r in graded["results"]}
    assert points == {
        q["single"]["id"]: 0.0,
        q["multiple"]["id"]: 0.0,
        q["true_false"]["id"]: 1.0,
        q["short"]["id"]: 1.5,
        q["numeric"]["id"]: 1.0,
    }
    assert graded["score"] == 3.5


async def test_a_quiz_not_yet_open_or_already_closed_is_refused(api: ApiClient) -> None:
    owner, course_id, (learner,) = await course_with(api)
    now = datetime.now(UTC)
    later = await make_quiz(api, owner, course_id, opens_at=(now + timedelta(days=1)).isoformat())
    status, body = await api.call("POST", f"/quizzes/{later['id']}/attempts", learner)
    assert status == 409 and "opens at" in body["error"]["message"]
    closed = await make_quiz(
        api, owner, course_id, opens_at=(now - timedelta(days=2)).isoformat(),
        closes_at=(now - timedelta(days=1)).isoformat(),
    )  # fmt: skip
    status, body = await api.call("POST", f"/quizzes/{closed['id']}/attempts", learner)
    assert status == 409 and "closed at" in body["error"]["message"]
    # Opening it again (the instructor moves the close) lets the learner in.
    status, _ = await api.call("PATCH", f"/quizzes/{closed['id']}", owner, json={"closes_at": None})
    assert status == 200
    await start(api, learner, closed["id"])


async def test_past_the_time_limit_the_saved_answers_are_graded(api: ApiClient) -> None:
    owner, course_id, (learner, other) = await course_with(api, learners=2)
    quiz = await make_quiz(api, owner, course_id, time_limit_s=600, attempts_allowed=2)
    right = right_answers(quiz)
    tf = key_of(quiz)["true_false"]["id"]
    attempt = await start(api, learner, quiz["id"])
    started = datetime.fromisoformat(attempt["started_at"])
    assert datetime.fromisoformat(attempt["deadline_at"]) - started == timedelta(seconds=600)
    status, saved = await api.call("PUT", f"/attempts/{attempt['id']}/answers", learner, json={"answers": {tf: True}})
    assert status == 200 and saved["answers"] == {tf: True}
    # Ten minutes pass (the deadline is moved back rather than waited for).
    await api.app[CORE].pool.execute(
        "UPDATE quiz_attempts SET deadline_at = now() - interval '1 minute' WHERE quiz_id = $1", uuid.UUID(quiz["id"])
    )
    status, late = await api.call("PUT", f"/attempts/{attempt['id']}/answers", learner, json={"answers": right})
    assert status == 409 and "time is up" in late["error"]["message"]
    graded = await submit(api, learner, attempt["id"], right)  # the answers sent now are not taken
    assert graded["finished_by"] == "deadline" and graded["answers"] == {tf: True} and graded["score"] == 1.0
    # An attempt nobody submits is graded with its saved answers once its deadline has passed.
    theirs = await start(api, other, quiz["id"])
    status, _ = await api.call("PUT", f"/attempts/{theirs['id']}/answers", other, json={"answers": {tf: True}})
    assert status == 200
    await api.app[CORE].pool.execute(
        "UPDATE quiz_attempts SET deadline_at = now() - interval '1 minute' WHERE id = $1", uuid.UUID(theirs["id"])
    )
    status, book = await api.call("GET", f"/courses/{course_id}/gradebook", owner)
    assert status == 200
    assert sorted(r["scores"][0] for r in book["rows"]) == [1.0, 1.0]
    status, seen = await api.call("GET", f"/attempts/{theirs['id']}", other)
    assert seen["state"] == "submitted" and seen["finished_by"] == "deadline"
    # The expired attempt counts: the learner starts their second and last one.
    assert (await start(api, other, quiz["id"]))["number"] == 2


async def test_closing_a_quiz_early_ends_the_attempts_in_progress(api: ApiClient) -> None:
    owner, course_id, (learner,) = await course_with(api)
    quiz = await make_quiz(api, owner, course_id)
    tf = key_of(quiz)["true_false"]["id"]
    attempt = await start(api, learner, quiz["id"])
    assert attempt["deadline_at"] is None  # no time limit, no close
    status, _ = await api.call("PUT", f"/attempts/{attempt['id']}/answers", learner, json={"answers": {tf: True}})
    assert status == 200
    closed = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    status, _ = await api.call("PATCH", f"/quizzes/{quiz['id']}", owner, json={"closes_at": closed})
    assert status == 200
    status, body = await api.call("PUT", f"/attempts/{attempt['id']}/answers", learner, json={"answers": {tf: False}})
    assert status == 409 and "time is up" in body["error"]["message"]
    status, seen = await api.call("GET", f"/attempts/{attempt['id']}", learner)
    assert (seen["state"], seen["finished_by"], seen["score"]) == ("submitted", "deadline", 1.0)


async def test_questions_and_options_are_shuffled_per_attempt_and_stable_on_reload(api: ApiClient) -> None:
    owner, course_id, learners = await course_with(api, learners=2)
    questions = [choice("single", [0], n=6) | {"prompt": f"Q{i}"} for i in range(10)]
    status, quiz = await api.call(
        "POST", f"/courses/{course_id}/quizzes", owner,
        json={"title": "Shuffled", "questions": questions, "shuffle_questions": True, "shuffle_options": True},
    )  # fmt: skip
    assert status == 201, quiz
    written = [q["id"] for q in quiz["questions"]]
    orders = []
    for learner in learners:
        attempt = await start(api, learner, quiz["id"])
        status, reread = await api.call("GET", f"/attempts/{attempt['id']}", learner)
        assert reread["questions"] == attempt["questions"]  # the same order on every read
        assert sorted(q["id"] for q in attempt["questions"]) == sorted(written)
        orders.append([q["id"] for q in attempt["questions"]])
        options = [[o["id"] for o in q["options"]] for q in attempt["questions"]]
        by_id = {q["id"]: [o["id"] for o in q["options"]] for q in quiz["questions"]}
        assert options != [by_id[qid] for qid in orders[-1]]  # 10 questions of 6 options: never all in place
    assert orders[0] != orders[1]  # two of 10! orders


async def test_a_quiz_may_show_learners_only_their_score(api: ApiClient) -> None:
    owner, course_id, (learner,) = await course_with(api)
    quiz = await make_quiz(api, owner, course_id, results_visible=False)
    attempt = await start(api, learner, quiz["id"])
    graded = await submit(api, learner, attempt["id"], right_answers(quiz))
    assert graded["score"] == 6.5 and graded["results"] is None
    status, seen = await api.call("GET", f"/attempts/{attempt['id']}", owner)
    assert status == 200 and len(seen["results"]) == 5  # staff see every question's result


async def test_the_demo_course_has_a_quiz_its_students_can_take(api: ApiClient) -> None:
    async with api.app[CORE].pool.acquire() as conn:
        demo = await load_demo(conn, api.app[AUTH].passwords)
    token = api.app[AUTH].tokens.issue(demo.user_ids["student1"], "student")
    student = Actor(str(demo.user_ids["student1"]), "demo-student1@example.com", "", "student", token)
    status, quizzes = await api.call("GET", f"/courses/{demo.course_id}/quizzes", student)
    assert status == 200 and [q["id"] for q in quizzes["items"]] == [str(demo_id("quiz"))]
    attempt = await start(api, student, str(demo_id("quiz")))
    assert len(attempt["questions"]) == 4 and not leaks(attempt)


# --- the answer key stays on the server -----------------------------------------------------------


def leaks(value: Any, path: str = "$") -> list[str]:
    """Where in a JSON answer a secret of the answer key appears (keys of key fields, or secret values)."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k in KEY_FIELDS:
                found.append(f"{path}.{k}")
            if k == "options" and isinstance(v, list):
                found += [f"{path}.options: {o}" for o in v if isinstance(o, dict) and set(o) - {"id", "text"}]
            found += leaks(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += leaks(v, f"{path}[{i}]")
    elif isinstance(value, str):
        if any(s.lower() in value.lower() for s in (SECRET_ACCEPTED, SECRET_STDIN, SECRET_OUTPUT, str(SECRET_NUMBER))):
            found.append(f"{path} = {value!r}")
    elif isinstance(value, float) and value in (SECRET_NUMBER, SECRET_TOLERANCE):
        found.append(f"{path} = {value}")
    return found


async def test_a_learner_never_receives_the_answer_key_from_any_quiz_endpoint(api: ApiClient) -> None:
    owner, course_id, (learner,) = await course_with(api)
    status, quiz = await api.call(
        "POST", f"/courses/{course_id}/quizzes", owner,
        json={"title": "Secret", "questions": every_kind(), "shuffle_options": True, "attempts_allowed": 2},
    )  # fmt: skip
    assert status == 201 and leaks(quiz)  # the staff view has the key (so the walk does find it)
    qid = quiz["id"]
    short = key_of(quiz)["short"]["id"]
    answers: dict[str, Any] = {short: "a guess"}
    called: set[tuple[str, str]] = set()
    seen: list[tuple[str, int, Any]] = []

    async def call(method: str, template: str, path: str, **kw: Any) -> tuple[int, Any]:
        status, body = await api.call(method, path, learner, **kw)
        called.add((method, "/api/v1" + template))
        seen.append((f"{method} {path}", status, body))
        return status, body

    async def walk_everything(attempt_id: str) -> None:
        await call("GET", "/courses/{course_id}/quizzes", f"/courses/{course_id}/quizzes")
        await call("GET", "/quizzes/{quiz_id}", f"/quizzes/{qid}")
        await call("GET", "/quizzes/{quiz_id}/questions", f"/quizzes/{qid}/questions")
        await call("GET", "/quizzes/{quiz_id}/attempts", f"/quizzes/{qid}/attempts")
        await call("GET", "/quizzes/{quiz_id}/stats", f"/quizzes/{qid}/stats")
        await call("GET", "/attempts/{attempt_id}", f"/attempts/{attempt_id}")
        await call("PATCH", "/quizzes/{quiz_id}", f"/quizzes/{qid}", json={"title": "Mine now"})
        await call("POST", "/courses/{course_id}/quizzes", f"/courses/{course_id}/quizzes",
                   json={"title": "X", "questions": every_kind()})  # fmt: skip
        await call("GET", "/courses/{course_id}/gradebook", f"/courses/{course_id}/gradebook")
        await call("GET", "/courses/{course_id}/gradebook.csv", f"/courses/{course_id}/gradebook.csv")
        # Bad answers: the error messages must not give the key away either.
        await call("PUT", "/attempts/{attempt_id}/answers", f"/attempts/{attempt_id}/answers",
                   json={"answers": {key_of(quiz)["numeric"]["id"]: "e"}})  # fmt: skip

    status, attempt = await call("POST", "/quizzes/{quiz_id}/attempts", f"/quizzes/{qid}/attempts")
    assert status == 201
    await call("PUT", "/attempts/{attempt_id}/answers", f"/attempts/{attempt['id']}/answers", json={"answers": answers})
    await walk_everything(attempt["id"])
    status, graded = await call("POST", "/attempts/{attempt_id}/submit", f"/attempts/{attempt['id']}/submit",
                                json={"answers": {}})  # fmt: skip
    assert status == 200 and graded["score"] == 0  # a wrong short answer, the code question left unanswered
    await walk_everything(attempt["id"])  # after submitting too: a second attempt may follow
    status, _second = await call("POST", "/quizzes/{quiz_id}/attempts", f"/quizzes/{qid}/attempts")
    assert status == 201
    refused = {what: status for what, status, _ in seen if status in (401, 403)}
    assert len(refused) == 6, refused  # key, stats, patch, create, gradebook and its CSV are staff-only
    found = [f"{what}: {leak}" for what, _, body in seen for leak in leaks(body)]
    assert not found, "answer key sent to a learner:\n" + "\n".join(found)
    # Every quiz and gradebook operation of the served API was called.
    resp = await api.http.get("/api/v1/openapi.json")
    spec = await resp.json()
    documented = {
        (m.upper(), p) for p, ops in spec["paths"].items() for m, op in ops.items()
        if set(op["tags"]) & {"quizzes", "gradebook"}
    }  # fmt: skip
    assert documented - called == set()


# --- code questions --------------------------------------------------------------------------------


@pytest.fixture
async def sapi(aiohttp_client: Any, database_url: str, tmp_path: Path, sandbox_machine: None) -> ApiClient:
    """An app judging in its own sandbox pool."""
    settings = make_settings(database_url, tmp_path, sandbox_workers=2, sandbox_wall_ms=6000, sandbox_cpu_ms=3000)
    return ApiClient(await aiohttp_client(create_app(settings)))


async def test_a_code_question_is_judged_by_the_real_sandbox(sapi: ApiClient) -> None:
    owner, course_id, (learner,) = await course_with(sapi)
    code = {
        "kind": "code", "prompt": "Print the sum of the two numbers on the line.", "language": "python", "points": 4.0,
        "tests": [{"stdin": "1 2\n", "expected_output": "3\n"}, {"stdin": "10 -4\n", "expected_output": "6\n"}],
    }  # fmt: skip
    status, quiz = await sapi.call(
        "POST",
        f"/courses/{course_id}/quizzes",
        owner,
        json={"title": "Code", "questions": [code], "attempts_allowed": 2},
    )
    assert status == 201, quiz
    qid = quiz["questions"][0]["id"]
    first = await start(sapi, learner, quiz["id"])
    assert first["questions"][0]["language"] == "python" and "tests" not in first["questions"][0]
    # Right only when the first number is 1: passes one case of two, half the points.
    graded = await submit(sapi, learner, first["id"], {qid: "a, b = map(int, input().split())\nprint(a + 2)\n"})
    (result,) = graded["results"]
    assert (result["verdict"], result["passed"], result["total"], result["points"]) == ("wrong_answer", 1, 2, 2.0)
    second = await start(sapi, learner, quiz["id"])
    graded = await submit(sapi, learner, second["id"], {qid: "print(sum(map(int, input().split())))"})
    (result,) = graded["results"]
    assert (result["verdict"], result["passed"], result["points"], graded["score"]) == ("accepted", 2, 4.0, 4.0)
    status, book = await sapi.call("GET", f"/courses/{course_id}/gradebook", owner)
    assert book["rows"][0]["scores"] == [4.0]  # the best attempt


async def test_without_a_judge_a_code_answer_waits_and_the_rest_still_grade(api: ApiClient) -> None:
    owner, course_id, (learner, other) = await course_with(api, learners=2)
    quiz = await make_quiz(api, owner, course_id, questions=every_kind())
    code, tf = key_of(quiz)["code"]["id"], key_of(quiz)["true_false"]["id"]
    api.app[GRADING].executions = None  # as on a node that cannot run sandboxes
    attempt = await start(api, learner, quiz["id"])
    status, body = await api.call("POST", f"/attempts/{attempt['id']}/submit", learner, json={"answers": {code: "x"}})
    assert status == 503 and "submit again later" in body["error"]["message"], body
    status, seen = await api.call("GET", f"/attempts/{attempt['id']}", learner)
    assert seen["state"] == "in_progress" and seen["answers"] == {code: "x"}  # nothing lost
    theirs = await start(api, other, quiz["id"])
    graded = await submit(api, other, theirs["id"], {tf: True, code: "   "})  # a blank program is not judged
    assert graded["score"] == 1.0


# --- statistics and the gradebook --------------------------------------------------------------------


async def test_per_question_statistics_equal_those_counted_by_hand(api: ApiClient) -> None:
    owner, course_id, learners = await course_with(api, learners=3)
    quiz = await make_quiz(api, owner, course_id, attempts_allowed=2)
    q = key_of(quiz)
    single_opts = [o["id"] for o in q["single"]["options"]]  # option 1 is right
    multi_opts = [o["id"] for o in q["multiple"]["options"]]  # options 0 and 2 are right
    ids = {kind: q[kind]["id"] for kind in q}
    sheets = [
        {ids["single"]: single_opts[1], ids["multiple"]: [multi_opts[0], multi_opts[2]], ids["true_false"]: True,
         ids["short"]: "unguja", ids["numeric"]: 3.0},
        {ids["single"]: single_opts[0], ids["multiple"]: [multi_opts[0]], ids["true_false"]: False},
        {ids["single"]: single_opts[1], ids["true_false"]: True, ids["short"]: "  "},
        {ids["single"]: single_opts[2], ids["multiple"]: [multi_opts[2], multi_opts[0]]},  # learner 0's second go
    ]  # fmt: skip
    for learner, sheet in zip([*learners, learners[0]], sheets, strict=True):
        attempt = await start(api, learner, quiz["id"])
        await submit(api, learner, attempt["id"], sheet)
    await start(api, learners[1], quiz["id"])  # in progress: not counted
    status, stats = await api.call("GET", f"/quizzes/{quiz['id']}/stats", owner)
    assert status == 200, stats
    assert (stats["attempts"], stats["learners"]) == (4, 3)
    by = {s["kind"]: s for s in stats["questions"]}
    assert (by["single"]["answered"], by["single"]["correct"], by["single"]["correct_rate"]) == (4, 2, 0.5)
    assert [o["chosen"] for o in by["single"]["options"]] == [1, 2, 1]
    assert (by["multiple"]["answered"], by["multiple"]["correct"], by["multiple"]["mean_points"]) == (3, 2, 4 / 3)
    assert [o["chosen"] for o in by["multiple"]["options"]] == [3, 0, 2, 0]
    assert (by["true_false"]["answered"], by["true_false"]["correct"]) == (3, 2)
    assert [(o["id"], o["chosen"]) for o in by["true_false"]["options"]] == [("true", 2), ("false", 1)]
    assert (by["short"]["answered"], by["short"]["correct"]) == (1, 1)  # blank is not an answer
    assert (by["numeric"]["answered"], by["numeric"]["correct"], by["numeric"]["correct_rate"]) == (1, 0, 0.0)
    assert by["numeric"]["options"] is None


async def test_the_gradebook_and_its_csv_equal_the_scores_computed_by_hand(api: ApiClient) -> None:
    names = ["Ada", '=HYPERLINK("http://evil")', "Zed"]
    owner, course_id, (ada, evil, zed) = await course_with(api, learners=3, names=names)
    status, assignment = await api.call(
        "POST", f"/courses/{course_id}/assignments", owner,
        json={"title": "-Essay", "due_at": "2099-01-01T00:00:00Z", "max_points": 10.0},
    )  # fmt: skip
    assert status == 201
    quiz = await make_quiz(api, owner, course_id, title="@Quiz one", attempts_allowed=2)
    tf = key_of(quiz)["true_false"]["id"]
    single = key_of(quiz)["single"]
    # Ada: quiz 6.5 then 1 (best: 6.5); essay graded 4, resubmitted and graded 7 (latest graded: 7).
    await submit(api, ada, (await start(api, ada, quiz["id"]))["id"], right_answers(quiz))
    await submit(api, ada, (await start(api, ada, quiz["id"]))["id"], {tf: True})
    for grade in (4.0, 7.0):
        status, sub = await api.call("POST", f"/assignments/{assignment['id']}/submissions", ada, json={"body": "x"})
        status, _ = await api.call("PUT", f"/submissions/{sub['id']}/grade", owner, json={"grade": grade})
        assert status == 200
    # Evil: quiz 1 (the single choice); essay submitted, not graded. Zed: nothing.
    await submit(api, evil, (await start(api, evil, quiz["id"]))["id"], {single["id"]: single["key"]["correct"][0]})
    status, _ = await api.call("POST", f"/assignments/{assignment['id']}/submissions", evil, json={"body": "y"})
    status, book = await api.call("GET", f"/courses/{course_id}/gradebook", owner)
    assert status == 200, book
    assert [(c["kind"], c["title"], c["max_points"]) for c in book["columns"]] == [
        ("assignment", "-Essay", 10.0), ("quiz", "@Quiz one", 6.5),
    ]  # fmt: skip
    assert sorted((r["display_name"], r["scores"], r["total"]) for r in book["rows"]) == [
        ("=HYPERLINK(\"http://evil\")", [None, 1.0], 1.0), ("Ada", [7.0, 6.5], 13.5), ("Zed", [None, None], 0.0),
    ]  # fmt: skip
    assert book["max_total"] == 16.5
    resp = await api.http.get(f"/api/v1/courses/{course_id}/gradebook.csv", headers=owner.headers)
    assert resp.status == 200 and resp.content_type == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    text = (await resp.read()).decode()
    header, *lines = text.splitlines()
    assert header == "learner,email,assignment: -Essay (10),quiz: @Quiz one (6.5),total (16.5)"
    assert sorted(lines) == [
        f'"\'=HYPERLINK(""http://evil"")",{evil.email},,1,1',
        f"Ada,{ada.email},7,6.5,13.5",
        f"Zed,{zed.email},,,0",
    ]
    admin = await api.user("admin")
    status, _ = await api.call("GET", f"/courses/{course_id}/gradebook.csv", admin)
    assert status == 200
    for outsider in (ada, await api.user("instructor")):
        status, body = await api.call("GET", f"/courses/{course_id}/gradebook", outsider)
        assert status == 403, body


# --- abuse ---------------------------------------------------------------------------------------------


@pytest.fixture
async def tight(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    settings = make_settings(
        database_url, tmp_path, quiz_max_questions=5, quiz_max_options=4, quiz_max_text_chars=200,
        quiz_save_rate_count=3, quiz_max_attempts_allowed=3,
    )  # fmt: skip
    return ApiClient(await aiohttp_client(create_app(settings)))


async def test_garbage_and_oversized_quizzes_are_refused_with_clear_messages(tight: ApiClient) -> None:
    api = tight
    owner, course_id, (learner,) = await course_with(api)
    path = f"/courses/{course_id}/quizzes"

    async def refused(body: Any, words: str) -> None:
        status, answer = await api.call("POST", path, owner, json=body)
        assert status == 400, answer
        assert words in str(answer["error"]), answer

    base = {"title": "Q", "questions": every_kind()[:2]}
    await refused({**base, "questions": [every_kind()[2]] * 6}, "at most 5 questions")
    await refused({**base, "questions": [choice("single", [0], n=5)]}, "at most 4 options")
    await refused({**base, "questions": [choice("single", [0, 1])]}, "exactly one correct option")
    await refused({**base, "questions": [choice("multiple", [])]}, "at least one option correct")
    await refused({**base, "questions": [{**every_kind()[2], "prompt": "x" * 201}]}, "longer than 200 characters")
    await refused({**base, "questions": [{"kind": "essay", "prompt": "?"}]}, "questions.0")
    await refused({**base, "questions": []}, "questions")
    await refused({**base, "attempts_allowed": 4}, "attempts_allowed may be at most 3")
    await refused({**base, "questions": [{**every_kind()[4], "answer": "12"}]}, "questions.0.numeric.answer")
    await refused({**base, "questions": [{**every_kind()[3], "accepted": ["   "]}]}, "blank once normalised")
    await refused(
        {**base, "opens_at": "2030-01-02T00:00:00Z", "closes_at": "2030-01-01T00:00:00Z"}, "closes_at must be after"
    )
    await refused({**base, "questions": [{**every_kind()[5], "language": "cobol"}]}, "questions.0")
    status, _answer = await api.call("POST", path, learner, json=base)
    assert status == 403

    quiz = await make_quiz(api, owner, course_id, questions=every_kind()[:5])
    q = key_of(quiz)
    attempt = await start(api, learner, quiz["id"])
    answers = f"/attempts/{attempt['id']}/answers"
    for bad, words in [
        ({q["single"]["id"]: "not-an-option"}, "option ids"),
        ({q["multiple"]["id"]: q["multiple"]["key"]["correct"] * 2}, "listed twice"),
        ({q["true_false"]["id"]: "yes"}, "true or false"),
        ({q["numeric"]["id"]: True}, "give a number"),
        ({q["numeric"]["id"]: 10**400}, "finite number"),
        ({q["short"]["id"]: "x" * 201}, "longer than 200"),
        ({str(uuid.uuid4()): 1}, "no question"),
    ]:
        status, body = await api.call("PUT", answers, learner, json={"answers": bad})
        assert status == 400 and words in body["error"]["message"], body
    status, body = await api.call("PUT", answers, learner, json={"answers": []})
    assert status == 400
    stranger = await api.user()
    status, body = await api.call("PUT", answers, stranger, json={"answers": {}})
    assert status == 403, body
    status, body = await api.call("POST", f"/quizzes/{quiz['id']}/attempts", stranger)
    assert status == 403 and "enrolled learners" in body["error"]["message"], body
    status, body = await api.call("POST", f"/quizzes/{quiz['id']}/attempts", owner)
    assert status == 403, body  # staff do not take their own quizzes
    # Saving is rate limited per attempt (3 per window in this app).
    tf = {"answers": {q["true_false"]["id"]: True}}
    statuses = [(await api.call("PUT", answers, learner, json=tf))[0] for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    # The submit's own answers are taken even so (submitting happens once).
    graded = await submit(api, learner, attempt["id"], {q["true_false"]["id"]: True, q["numeric"]["id"]: 0})
    assert graded["answers"] == {q["true_false"]["id"]: True, q["numeric"]["id"]: 0} and graded["score"] == 1.0
    status, body = await api.call("GET", f"/attempts/{uuid.uuid4()}", learner)
    assert status == 404
    status, body = await api.call("GET", "/quizzes/not-a-uuid", learner)
    assert status == 404
