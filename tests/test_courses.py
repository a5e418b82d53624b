"""Courses and lectures: ownership, draft → published, ordering, and who sees what."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from tests.conftest import Actor, ApiClient

VIDEO = {"media_kind": "video", "media_url": "https://example.com/v.mp4", "duration_s": 120.0}


async def make_course(api: ApiClient, owner: Actor, title: str = "Algorithms") -> dict[str, Any]:
    status, course = await api.call("POST", "/courses", owner, json={"title": title, "description": "d"})
    assert status == 201, course
    return dict(course)


async def test_publishing_needs_a_lecture_and_makes_the_course_visible(api: ApiClient) -> None:
    teacher, learner = await api.user("instructor"), await api.user()
    course = await make_course(api, teacher)
    assert course["status"] == "draft"
    status, _ = await api.call("GET", f"/courses/{course['id']}", learner)
    assert status == 404
    status, body = await api.call("POST", f"/courses/{course['id']}/publish", teacher)
    assert status == 409
    assert "lecture" in body["error"]["message"]
    await api.call("POST", f"/courses/{course['id']}/lectures", teacher, json={"title": "Intro", **VIDEO})
    status, published = await api.call("POST", f"/courses/{course['id']}/publish", teacher)
    assert status == 200
    assert published["status"] == "published"
    assert published["published_at"] is not None
    assert published["lecture_count"] == 1
    status, seen = await api.call("GET", f"/courses/{course['id']}", learner)
    assert status == 200
    assert seen["title"] == "Algorithms"


async def test_course_list_shows_published_and_own_drafts_only(api: ApiClient) -> None:
    teacher, other, learner = await api.user("instructor"), await api.user("instructor"), await api.user()
    draft = await make_course(api, teacher, "Mine, draft")
    others_draft = await make_course(api, other, "Theirs, draft")

    async def ids(actor: Actor, query: str = "") -> set[str]:
        found: set[str] = set()
        cursor = None
        while True:
            q = f"/courses?limit=2{query}" + (f"&cursor={cursor}" if cursor else "")
            status, page = await api.call("GET", q, actor)
            assert status == 200
            found |= {c["id"] for c in page["items"]}
            cursor = page["next_cursor"]
            if cursor is None:
                return found

    assert draft["id"] in await ids(teacher)
    assert others_draft["id"] not in await ids(teacher)
    assert draft["id"] not in await ids(learner)
    assert await ids(teacher, "&mine=true") == {draft["id"]}


async def test_lectures_keep_their_order_and_positions_can_change(api: ApiClient) -> None:
    teacher = await api.user("instructor")
    course = await make_course(api, teacher)
    made = []
    for title in ("one", "two", "three"):
        status, lec = await api.call(
            "POST", f"/courses/{course['id']}/lectures", teacher, json={"title": title, **VIDEO}
        )
        assert status == 201
        made.append(lec)
    assert [lec["position"] for lec in made] == [0, 1, 2]
    status, _ = await api.call("PATCH", f"/lectures/{made[0]['id']}", teacher, json={"position": 5})
    assert status == 200
    status, listing = await api.call("GET", f"/courses/{course['id']}/lectures", teacher)
    assert [lec["title"] for lec in listing["items"]] == ["two", "three", "one"]
    status, body = await api.call(
        "POST", f"/courses/{course['id']}/lectures", teacher, json={"title": "x", **VIDEO, "media_url": "ftp://x"}
    )
    assert status == 400
    assert body["error"]["details"]["fields"][0]["loc"] == "media_url"


async def add(api: ApiClient, teacher: Any, course: dict[str, Any], title: str, **extra: Any) -> dict[str, Any]:
    status, lec = await api.call(
        "POST", f"/courses/{course['id']}/lectures", teacher, json={"title": title, **VIDEO, **extra}
    )
    assert status == 201, lec
    return cast(dict[str, Any], lec)


async def order(api: ApiClient, teacher: Any, course: dict[str, Any]) -> list[tuple[int, str]]:
    status, listing = await api.call("GET", f"/courses/{course['id']}/lectures", teacher)
    assert status == 200
    return [(lec["position"], lec["title"]) for lec in listing["items"]]


async def test_lecture_positions_stay_a_permutation_through_moves_inserts_and_deletes(api: ApiClient) -> None:
    teacher = await api.user("instructor")
    course = await make_course(api, teacher)
    a, b, c = [await add(api, teacher, course, t) for t in "ABC"]
    status, moved = await api.call("PATCH", f"/lectures/{c['id']}", teacher, json={"position": 0})
    assert status == 200 and moved["position"] == 0
    assert await order(api, teacher, course) == [(0, "C"), (1, "A"), (2, "B")]
    await add(api, teacher, course, "D", position=1)
    assert await order(api, teacher, course) == [(0, "C"), (1, "D"), (2, "A"), (3, "B")]
    await api.call("PATCH", f"/lectures/{c['id']}", teacher, json={"position": 2})
    assert await order(api, teacher, course) == [(0, "D"), (1, "A"), (2, "C"), (3, "B")]
    await add(api, teacher, course, "E", position=99)  # past the end: last
    status, _ = await api.call("DELETE", f"/lectures/{a['id']}", teacher)
    assert status == 204
    assert await order(api, teacher, course) == [(0, "D"), (1, "C"), (2, "B"), (3, "E")]
    await api.call("PATCH", f"/lectures/{b['id']}", teacher, json={"title": "B2"})  # no position: stays
    assert await order(api, teacher, course) == [(0, "D"), (1, "C"), (2, "B2"), (3, "E")]


async def test_concurrent_moves_and_inserts_keep_positions_a_permutation(api: ApiClient) -> None:
    teacher = await api.user("instructor")
    course = await make_course(api, teacher)
    made = [await add(api, teacher, course, f"L{i}") for i in range(6)]
    jobs = [
        api.call("PATCH", f"/lectures/{lec['id']}", teacher, json={"position": (i * 5) % 6})
        for i, lec in enumerate(made)
    ]
    jobs += [
        api.call("POST", f"/courses/{course['id']}/lectures", teacher, json={"title": f"N{i}", **VIDEO, "position": i})
        for i in range(4)
    ]
    jobs += [api.call("DELETE", f"/lectures/{made[5]['id']}", teacher)]
    answers = await asyncio.gather(*jobs)
    assert all(status in (200, 201, 204, 404) for status, _ in answers), answers
    positions = [p for p, _ in await order(api, teacher, course)]
    assert positions == list(range(len(positions))) and len(positions) == 9


async def test_a_published_course_keeps_at_least_one_lecture(api: ApiClient) -> None:
    teacher = await api.user("instructor")
    course = await make_course(api, teacher)
    _, lec = await api.call("POST", f"/courses/{course['id']}/lectures", teacher, json={"title": "only", **VIDEO})
    await api.call("POST", f"/courses/{course['id']}/publish", teacher)
    status, _ = await api.call("DELETE", f"/lectures/{lec['id']}", teacher)
    assert status == 409


async def test_granted_roles_apply_to_existing_tokens_at_once(api: ApiClient) -> None:
    admin, user = await api.user("admin"), await api.user()
    status, _ = await api.call("POST", "/courses", user, json={"title": "Not yet"})
    assert status == 403
    status, granted = await api.call("PUT", f"/users/{user.id}/role", admin, json={"role": "instructor"})
    assert status == 200
    assert granted["role"] == "instructor"
    status, _ = await api.call("POST", "/courses", user, json={"title": "Now"})
    assert status == 201
    status, log = await api.call("GET", "/audit", admin)
    assert any(e["action"] == "user.role_granted" and e["target_id"] == user.id for e in log["items"])
