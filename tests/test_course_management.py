"""Course management against real Postgres: unpublish, archive, restore, soft delete; categories and tags in the
catalogue; prerequisites on enroll and buy; instructors' view of learners; "continue where you left off"."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core_api.catalog.core import normalise_category, normalise_tags
from core_api.context import CORE
from core_api.errors import AppError
from core_api.learners.core import LectureState, resume_point
from realtime.app import create_app
from tests.conftest import Actor, ApiClient, make_settings
from tests.learning_helpers import report, watch
from tests.test_paywall import PRICE, give_coins

VIDEO = {"media_kind": "video", "media_url": "https://example.com/v.mp4"}


async def ok(api: ApiClient, method: str, path: str, actor: Actor | None = None, **kw: Any) -> Any:
    status, body = await api.call(method, path, actor, **kw)
    assert status < 300, (method, path, status, body)
    return body


async def course_with(
    api: ApiClient, owner: Actor, title: str, durations: tuple[float, ...] = (0.0,), publish: bool = True, **fields: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A course with one lecture per duration (a lecture without a duration completes once opened)."""
    course = await ok(api, "POST", "/courses", owner, json={"title": title, **fields})
    lectures = [
        await ok(api, "POST", f"/courses/{course['id']}/lectures", owner,
                 json={"title": f"{title} {n}", "duration_s": d, **VIDEO})
        for n, d in enumerate(durations)
    ]  # fmt: skip
    if publish:
        course = await ok(api, "POST", f"/courses/{course['id']}/publish", owner)
    return course, lectures


async def catalogue(api: ApiClient, actor: Actor, query: str = "") -> list[str]:
    found: list[str] = []
    cursor = None
    while True:
        path = f"/courses?limit=50{query}" + (f"&cursor={cursor}" if cursor else "")
        page = await ok(api, "GET", path, actor)
        found += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


LIFECYCLE = [
    "course.published",
    "course.unpublished",
    "course.archived",
    "course.restored",
    "course.deleted",
    "course.prerequisites",
]


async def audit_actions(api: ApiClient, course_id: str) -> list[str]:
    rows = await api.app[CORE].pool.fetch(
        "SELECT action FROM audit_log WHERE target_kind = 'course' AND target_id = $1"
        " AND action = ANY($2::text[]) ORDER BY created_at",
        course_id,
        LIFECYCLE,
    )
    return [r["action"] for r in rows]


# --- unpublish -----------------------------------------------------------------------------------


async def test_unpublished_course_leaves_the_catalogue_and_takes_no_newcomers_but_keeps_its_learners(
    api: ApiClient,
) -> None:
    teacher, enrolled, newcomer = await api.user("instructor"), await api.user(), await api.user()
    course, lectures = await course_with(api, teacher, "Unpublish me", (30.0,))
    cid = course["id"]
    await ok(api, "POST", f"/courses/{cid}/enroll", enrolled)

    out = await ok(api, "POST", f"/courses/{cid}/unpublish", teacher)
    assert out["status"] == "unpublished"
    assert cid not in await catalogue(api, newcomer)
    assert cid not in await catalogue(api, enrolled)
    assert (await api.call("GET", f"/courses/{cid}", newcomer))[0] == 404
    status, body = await api.call("POST", f"/courses/{cid}/enroll", newcomer)
    assert status == 404, body  # not visible to them at all

    # The enrolled learner keeps the course, its lectures and their progress.
    assert (await ok(api, "GET", f"/courses/{cid}", enrolled))["status"] == "unpublished"
    listing = await ok(api, "GET", f"/courses/{cid}/lectures", enrolled)
    assert listing["items"][0]["media_url"] == VIDEO["media_url"]
    await report(api, enrolled, lectures[0], 5.0)
    assert (await ok(api, "GET", f"/courses/{cid}/progress", enrolled))["lectures"][0]["position_s"] == 5.0
    again = await api.call("POST", f"/courses/{cid}/enroll", enrolled)
    assert again[0] == 200  # still idempotent for those already in

    # Idempotent; publishing again opens it to newcomers.
    assert (await ok(api, "POST", f"/courses/{cid}/unpublish", teacher))["status"] == "unpublished"
    await ok(api, "POST", f"/courses/{cid}/publish", teacher)
    assert cid in await catalogue(api, newcomer)
    assert (await api.call("POST", f"/courses/{cid}/enroll", newcomer))[0] == 201
    assert await audit_actions(api, cid) == ["course.published", "course.unpublished", "course.published"]


async def test_unpublished_priced_course_refuses_a_purchase_by_one_who_left(api: ApiClient) -> None:
    teacher, learner = await api.user("instructor"), await api.user()
    course, _ = await course_with(api, teacher, "Paid, then closed", (30.0,))
    cid = course["id"]
    await ok(api, "PUT", f"/courses/{cid}/price", teacher, json={"coins": PRICE})
    await give_coins(api, learner, PRICE)
    await ok(api, "POST", f"/courses/{cid}/buy", learner)
    await ok(api, "POST", f"/courses/{cid}/unpublish", teacher)
    assert (await ok(api, "GET", f"/courses/{cid}/lectures", learner))["items"][0]["locked"] is False
    await ok(api, "DELETE", f"/courses/{cid}/enroll", learner)
    assert (await api.call("POST", f"/courses/{cid}/buy", learner))[0] == 404


async def test_only_the_owner_or_an_admin_manage_a_course_and_garbage_ids_name_nothing(api: ApiClient) -> None:
    teacher, other, learner, admin = (
        await api.user("instructor"), await api.user("instructor"), await api.user(), await api.user("admin")
    )  # fmt: skip
    course, _ = await course_with(api, teacher, "Guarded")
    cid = course["id"]
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"/courses/{cid}/unpublish", {}),
        ("POST", f"/courses/{cid}/archive", {}),
        ("POST", f"/courses/{cid}/restore", {}),
        ("DELETE", f"/courses/{cid}", {}),
        ("PUT", f"/courses/{cid}/prerequisites", {"json": {"course_ids": []}}),
        ("GET", f"/courses/{cid}/learners", {}),
        ("GET", f"/courses/{cid}/learners/{learner.id}/progress", {}),
    ]
    for actor in (other, learner):
        for method, path, kw in calls:
            status, body = await api.call(method, path, actor, **kw)
            assert status == 403, (actor.role, method, path, status, body)
    for path in ("/courses/not-a-uuid/unpublish", f"/courses/{uuid.uuid4()}/archive", "/courses/%00/restore"):
        assert (await api.call("POST", path, teacher))[0] == 404
    assert (await api.call("DELETE", "/courses/12345", teacher))[0] == 404
    assert (await api.call("POST", f"/courses/{cid}/unpublish"))[0] == 401
    # Someone else's draft is invisible, so not manageable either.
    draft, _ = await course_with(api, other, "Other's draft", publish=False)
    assert (await api.call("POST", f"/courses/{draft['id']}/archive", teacher))[0] == 404
    # Admins may.
    assert (await ok(api, "POST", f"/courses/{cid}/unpublish", admin))["status"] == "unpublished"
    status, body = await api.call("POST", f"/courses/{draft['id']}/unpublish", other)
    assert status == 409 and "never published" in body["error"]["message"]


# --- archive and restore -------------------------------------------------------------------------


async def test_archived_course_is_read_only_and_kept_for_its_learners_then_restored(api: ApiClient) -> None:
    teacher, enrolled, newcomer = await api.user("instructor"), await api.user(), await api.user()
    course, lectures = await course_with(api, teacher, "Archive me", (30.0, 30.0))
    other, _ = await course_with(api, teacher, "Another")
    cid = course["id"]
    await ok(api, "POST", f"/courses/{cid}/enroll", enrolled)

    archived = await ok(api, "POST", f"/courses/{cid}/archive", teacher)
    assert archived["status"] == "archived" and archived["archived_at"] is not None
    assert cid not in await catalogue(api, newcomer)
    assert (await api.call("GET", f"/courses/{cid}", newcomer))[0] == 404
    assert (await ok(api, "GET", f"/courses/{cid}", enrolled))["status"] == "archived"
    assert len((await ok(api, "GET", f"/courses/{cid}/lectures", enrolled))["items"]) == 2
    await report(api, enrolled, lectures[0], 3.0)

    for method, path, body in (
        ("PATCH", f"/courses/{cid}", {"title": "Changed"}),
        ("POST", f"/courses/{cid}/lectures", {"title": "More", "duration_s": 1.0, **VIDEO}),
        ("PATCH", f"/lectures/{lectures[0]['id']}", {"title": "Renamed"}),
        ("PATCH", f"/lectures/{lectures[0]['id']}", {"position": 1}),
        ("DELETE", f"/lectures/{lectures[1]['id']}", None),
        ("PUT", f"/courses/{cid}/price", {"coins": 10}),
        ("PUT", f"/courses/{cid}/prerequisites", {"course_ids": [other["id"]]}),
        ("POST", f"/courses/{cid}/publish", None),
        ("POST", f"/courses/{cid}/unpublish", None),
    ):
        status, answer = await api.call(method, path, teacher, **({"json": body} if body is not None else {}))
        assert status == 409, (method, path, status, answer)
        assert "archived" in answer["error"]["message"]
    assert (await ok(api, "GET", f"/courses/{cid}", teacher))["title"] == "Archive me"

    # Archiving again changes nothing; restore goes back to published.
    assert (await ok(api, "POST", f"/courses/{cid}/archive", teacher))["status"] == "archived"
    restored = await ok(api, "POST", f"/courses/{cid}/restore", teacher)
    assert (restored["status"], restored["archived_at"]) == ("published", None)
    assert cid in await catalogue(api, newcomer)
    status, body = await api.call("POST", f"/courses/{cid}/restore", teacher)
    assert status == 409 and "not archived" in body["error"]["message"]
    assert await audit_actions(api, cid) == ["course.published", "course.archived", "course.restored"]

    # A draft archived comes back a draft.
    draft, _ = await course_with(api, teacher, "Draft to archive", publish=False)
    await ok(api, "POST", f"/courses/{draft['id']}/archive", teacher)
    assert (await ok(api, "POST", f"/courses/{draft['id']}/restore", teacher))["status"] == "draft"


# --- soft delete ---------------------------------------------------------------------------------


async def test_delete_is_refused_while_learners_are_enrolled_and_then_hides_the_course_from_all_but_admins(
    api: ApiClient,
) -> None:
    teacher, learner, admin = await api.user("instructor"), await api.user(), await api.user("admin")
    course, _ = await course_with(api, teacher, "Delete me")
    cid = course["id"]
    await ok(api, "POST", f"/courses/{cid}/enroll", learner)
    status, body = await api.call("DELETE", f"/courses/{cid}", teacher)
    assert status == 409
    assert "archive it instead" in body["error"]["message"]
    assert body["error"]["details"]["enrolled"] == 1

    await ok(api, "DELETE", f"/courses/{cid}/enroll", learner)
    assert (await api.call("DELETE", f"/courses/{cid}", teacher))[0] == 204
    for actor in (teacher, learner):
        assert (await api.call("GET", f"/courses/{cid}", actor))[0] == 404
        assert (await api.call("GET", f"/courses/{cid}/lectures", actor))[0] == 404
        assert (await api.call("POST", f"/courses/{cid}/enroll", actor))[0] == 404
        assert cid not in await catalogue(api, actor)
        assert cid not in await catalogue(api, actor, "&mine=true")
    assert (await api.call("DELETE", f"/courses/{cid}", teacher))[0] == 404
    seen = await ok(api, "GET", f"/courses/{cid}", admin)
    assert seen["deleted_at"] is not None
    assert cid not in await catalogue(api, admin)
    assert cid in await catalogue(api, admin, "&deleted=true")
    assert (await api.call("GET", "/courses?deleted=true", teacher))[0] == 403
    assert (await api.call("DELETE", f"/courses/{cid}", admin))[0] == 204  # already deleted: nothing to do
    assert await audit_actions(api, cid) == ["course.published", "course.deleted"]


async def test_a_delete_racing_an_enrollment_never_leaves_a_deleted_course_with_a_learner(api: ApiClient) -> None:
    teacher = await api.user("instructor")
    pool = api.app[CORE].pool
    for n in range(6):
        learner = await api.user()
        course, _ = await course_with(api, teacher, f"Race {n}")
        cid = course["id"]
        (deleted, _), (enrolled, _) = await asyncio.gather(
            api.call("DELETE", f"/courses/{cid}", teacher), api.call("POST", f"/courses/{cid}/enroll", learner)
        )
        assert {deleted, enrolled} in ({204, 404}, {409, 201}), (deleted, enrolled)
        row = await pool.fetchrow(
            "SELECT deleted_at IS NOT NULL AS gone, (SELECT count(*) FROM enrollments WHERE course_id = $1) AS n"
            " FROM courses WHERE id = $1",
            uuid.UUID(cid),
        )
        assert not (row["gone"] and row["n"]), (n, deleted, enrolled)


# --- categories and tags -------------------------------------------------------------------------


def test_labels_are_trimmed_lower_cased_collapsed_and_limited() -> None:
    assert normalise_tags(["  Data   Science ", "data science", "PYTHON"], max_tags=2, max_length=20) == [
        "data science",
        "python",
    ]
    assert normalise_category("  Computer\tScience ", max_length=30) == "computer science"
    assert normalise_category("   ", max_length=30) is None
    for bad in (["a", "b", "c"], ["x" * 21], [" "], ["tab\x07bell"]):
        with pytest.raises(AppError):
            normalise_tags(bad, max_tags=2, max_length=20)


async def test_catalogue_filters_by_category_and_every_tag_and_lists_prices(api: ApiClient) -> None:
    teacher, learner = await api.user("instructor"), await api.user()
    mark = uuid.uuid4().hex[:8]  # tests share a database: unique labels
    a, _ = await course_with(api, teacher, "A", category=f" Data  {mark} ", tags=[f"Python-{mark}", f"ml-{mark}"])
    b, _ = await course_with(api, teacher, "B", category=f"data {mark}", tags=[f"python-{mark}"])
    c, _ = await course_with(api, teacher, "C", category=f"web {mark}", tags=[f"ML-{mark}", f"python-{mark}"])
    hidden, _ = await course_with(api, teacher, "D", publish=False, category=f"data {mark}", tags=[f"python-{mark}"])
    await ok(api, "PUT", f"/courses/{b['id']}/price", teacher, json={"coins": 25})
    assert (a["category"], a["tags"]) == (f"data {mark}", [f"ml-{mark}", f"python-{mark}"])

    assert await catalogue(api, learner, f"&category=DATA%20{mark}") == [a["id"], b["id"]]
    assert await catalogue(api, learner, f"&tag=python-{mark}") == [a["id"], b["id"], c["id"]]
    assert await catalogue(api, learner, f"&tag=python-{mark}&tag=ML-{mark}") == [a["id"], c["id"]]
    assert await catalogue(api, learner, f"&tag=python-{mark}&tag=ml-{mark}&category=web%20{mark}") == [c["id"]]
    assert await catalogue(api, learner, f"&tag=nothing-{mark}") == []
    assert hidden["id"] in await catalogue(api, teacher, f"&tag=python-{mark}")  # the owner's own draft
    page = await ok(api, "GET", f"/courses?category=data%20{mark}", learner)
    assert [(x["title"], x["price_coins"]) for x in page["items"]] == [("A", None), ("B", 25)]

    # Edits: tags replaced, category cleared; the filters follow.
    patched = await ok(api, "PATCH", f"/courses/{a['id']}", teacher, json={"tags": [f"R-{mark}"], "category": None})
    assert (patched["category"], patched["tags"]) == (None, [f"r-{mark}"])
    assert await catalogue(api, learner, f"&tag=python-{mark}") == [b["id"], c["id"]]
    assert await catalogue(api, learner, f"&category=data%20{mark}") == [b["id"]]
    kept = await ok(api, "PATCH", f"/courses/{a['id']}", teacher, json={"title": "A2"})
    assert kept["tags"] == [f"r-{mark}"]


async def test_too_many_or_too_long_tags_and_bad_filters_are_refused(api: ApiClient) -> None:
    teacher, learner = await api.user("instructor"), await api.user()
    too_many = [f"t{n}" for n in range(11)]
    for body in (
        {"title": "x", "tags": too_many},
        {"title": "x", "tags": ["y" * 33]},
        {"title": "x", "tags": ["   "]},
        {"title": "x", "tags": "python"},
        {"title": "x", "tags": [1]},
        {"title": "x", "category": "c" * 49},
        {"title": "x", "category": "bell\u0007"},
        {"title": "x", "tags": ["t"] * 201},
    ):
        status, answer = await api.call("POST", "/courses", teacher, json=body)
        assert status == 400, (body, answer)
    # Repeats collapse before counting: eleven spellings of one tag are one tag.
    made = await ok(api, "POST", "/courses", teacher, json={"title": "x", "tags": [" A "] * 5 + ["a"] * 6})
    assert made["tags"] == ["a"]
    status, _ = await api.call("PATCH", f"/courses/{made['id']}", teacher, json={"tags": too_many})
    assert status == 400
    query = "&".join(f"tag={t}" for t in too_many)
    assert (await api.call("GET", f"/courses?{query}", learner))[0] == 400
    assert (await api.call("GET", f"/courses?tag={'z' * 33}", learner))[0] == 400
    assert (await api.call("GET", "/courses?category=%20", learner))[0] == 400


async def test_tag_and_category_filters_use_their_indexes(api: ApiClient) -> None:
    pool = api.app[CORE].pool
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        tag_plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT t.course_id FROM course_tags t WHERE t.tag = ANY($1::text[])"
                " GROUP BY t.course_id HAVING count(*) = 2",
                ["a", "b"],
            )
        )
        category_plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN SELECT id FROM courses c WHERE c.deleted_at IS NULL AND c.category = $1"
                " ORDER BY c.created_at, c.id LIMIT 51",
                "data",
            )
        )
    assert "course_tags_tag" in tag_plan, tag_plan
    assert "courses_category_page" in category_plan, category_plan


# --- prerequisites -------------------------------------------------------------------------------


async def test_enrolling_or_buying_needs_the_prerequisites_completed(api: ApiClient) -> None:
    teacher, learner = await api.user("instructor"), await api.user()
    basics, basics_lectures = await course_with(api, teacher, "Basics")
    intro, intro_lectures = await course_with(api, teacher, "Intro")
    advanced, _ = await course_with(api, teacher, "Advanced")
    shown = await ok(
        api, "PUT", f"/courses/{advanced['id']}/prerequisites", teacher,
        json={"course_ids": [intro["id"], basics["id"], intro["id"]]},
    )  # fmt: skip
    assert [p["title"] for p in shown["prerequisites"]] == ["Basics", "Intro"]
    assert [p["title"] for p in (await ok(api, "GET", f"/courses/{advanced['id']}", learner))["prerequisites"]] == [
        "Basics",
        "Intro",
    ]

    status, body = await api.call("POST", f"/courses/{advanced['id']}/enroll", learner)
    assert status == 409
    assert "Basics" in body["error"]["message"] and "Intro" in body["error"]["message"]
    assert [m["id"] for m in body["error"]["details"]["missing"]] == [basics["id"], intro["id"]]

    # Complete Basics (a lecture without a duration completes once opened): only Intro is missing now.
    await ok(api, "POST", f"/courses/{basics['id']}/enroll", learner)
    done = await report(api, learner, basics_lectures[0], 0.0)
    assert done["course"]["certificate"] is not None
    status, body = await api.call("POST", f"/courses/{advanced['id']}/enroll", learner)
    assert status == 409 and [m["title"] for m in body["error"]["details"]["missing"]] == ["Intro"]

    # Buying is held to the same rule.
    await ok(api, "PUT", f"/courses/{advanced['id']}/price", teacher, json={"coins": PRICE})
    await give_coins(api, learner, PRICE)
    status, body = await api.call("POST", f"/courses/{advanced['id']}/buy", learner)
    assert status == 409 and [m["title"] for m in body["error"]["details"]["missing"]] == ["Intro"]
    assert (await ok(api, "GET", "/me/wallet", learner))["balance"] == PRICE

    await ok(api, "POST", f"/courses/{intro['id']}/enroll", learner)
    await report(api, learner, intro_lectures[0], 0.0)
    bought = await ok(api, "POST", f"/courses/{advanced['id']}/buy", learner)
    assert bought["coins_paid"] == PRICE
    # Leaving a completed course keeps its certificate: still counts.
    await ok(api, "DELETE", f"/courses/{basics['id']}/enroll", learner)
    other, _ = await course_with(api, teacher, "Needs basics")
    await ok(api, "PUT", f"/courses/{other['id']}/prerequisites", teacher, json={"course_ids": [basics["id"]]})
    assert (await api.call("POST", f"/courses/{other['id']}/enroll", learner))[0] == 201

    # The owner is not held to them; a prerequisite unpublished stops being one.
    assert (await api.call("POST", f"/courses/{advanced['id']}/enroll", teacher))[0] == 201
    newcomer = await api.user()
    await ok(api, "PUT", f"/courses/{advanced['id']}/price", teacher, json={"coins": 0})
    await ok(api, "POST", f"/courses/{intro['id']}/unpublish", teacher)
    status, body = await api.call("POST", f"/courses/{advanced['id']}/enroll", newcomer)
    assert status == 409 and [m["title"] for m in body["error"]["details"]["missing"]] == ["Basics"]
    assert [p["title"] for p in (await ok(api, "GET", f"/courses/{advanced['id']}", newcomer))["prerequisites"]] == [
        "Basics"
    ]


async def test_prerequisites_refuse_self_cycles_garbage_drafts_and_too_many(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    api = ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path, course_max_prerequisites=2))))
    teacher = await api.user("instructor")
    a, _ = await course_with(api, teacher, "A")
    b, _ = await course_with(api, teacher, "B")
    c, _ = await course_with(api, teacher, "C")
    d, _ = await course_with(api, teacher, "D")
    draft, _ = await course_with(api, teacher, "Draft", publish=False)

    async def put(course: dict[str, Any], ids: Any) -> tuple[int, Any]:
        return await api.call("PUT", f"/courses/{course['id']}/prerequisites", teacher, json={"course_ids": ids})

    assert (await put(a, [a["id"]]))[0] == 400
    status, body = await put(a, ["nope", b["id"]])
    assert status == 400 and body["error"]["details"]["not_ids"] == ["nope"]
    status, body = await put(a, [str(uuid.uuid4())])
    assert status == 400 and "not" in body["error"]["message"]
    assert (await put(a, [draft["id"]]))[0] == 400
    assert (await put(a, [b["id"], c["id"], d["id"]]))[0] == 400  # the limit is 2 here
    assert (await put(a, "not a list"))[0] == 400
    assert (await put(a, [{"id": b["id"]}]))[0] == 400

    assert (await put(a, [b["id"]]))[0] == 200  # A needs B
    assert (await put(b, [c["id"]]))[0] == 200  # B needs C
    status, body = await put(b, [a["id"]])
    assert status == 409 and "cycle" in body["error"]["message"]
    status, body = await put(c, [a["id"]])  # C -> A -> B -> C
    assert status == 409 and "cycle" in body["error"]["message"]
    # An unpublished course still counts for cycles (publishing it again must not close one).
    await ok(api, "POST", f"/courses/{a['id']}/unpublish", teacher)
    await ok(api, "POST", f"/courses/{a['id']}/publish", teacher)
    assert (await put(c, [a["id"]]))[0] == 409
    assert (await put(a, []))[0] == 200
    assert (await put(c, [a["id"]]))[0] == 200

    # Two edits at once that would close a cycle between them: one of them is refused.
    e, _ = await course_with(api, teacher, "E")
    f, _ = await course_with(api, teacher, "F")
    results = await asyncio.gather(put(e, [f["id"]]), put(f, [e["id"]]))
    assert sorted(s for s, _ in results) == [200, 409], results


# --- learners' progress for instructors ----------------------------------------------------------


async def test_the_owner_sees_each_learners_progress_and_last_activity(api: ApiClient) -> None:
    teacher, admin = await api.user("instructor"), await api.user("admin")
    ann, bob, stranger = await api.user(name="Ann Learner"), await api.user(name="Bob Learner"), await api.user()
    course, lectures = await course_with(api, teacher, "Tracked", (0.0, 20.0, 20.0))
    cid = course["id"]
    for who in (ann, bob):
        await ok(api, "POST", f"/courses/{cid}/enroll", who)
    before = datetime.now(UTC) - timedelta(seconds=5)
    await report(api, ann, lectures[0], 0.0)  # completes (no duration)
    await watch(api, ann, lectures[1])  # completes
    await report(api, ann, lectures[2], 7.5)

    page = await ok(api, "GET", f"/courses/{cid}/learners?limit=1", teacher)
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = await ok(api, "GET", f"/courses/{cid}/learners?limit=1&cursor={page['next_cursor']}", teacher)
    rows = {r["display_name"]: r for r in page["items"] + rest["items"]}
    assert (rows["Ann Learner"]["completed_lectures"], rows["Ann Learner"]["percent"]) == (2, 66.67)
    assert datetime.fromisoformat(rows["Ann Learner"]["last_activity_at"]) > before
    assert (rows["Bob Learner"]["completed_lectures"], rows["Bob Learner"]["last_activity_at"]) == (0, None)

    detail = await ok(api, "GET", f"/courses/{cid}/learners/{ann.id}/progress", admin)
    assert [(lec["completed"], lec["position_s"]) for lec in detail["lectures"]] == [
        (True, 0.0),
        (True, 20.0),
        (False, 7.5),
    ]
    assert all(lec["updated_at"] for lec in detail["lectures"])
    assert (detail["user_id"], detail["percent"]) == (ann.id, 66.67)
    assert (await api.call("GET", f"/courses/{cid}/learners/{stranger.id}/progress", teacher))[0] == 404
    assert (await api.call("GET", f"/courses/{cid}/learners/not-a-user/progress", teacher))[0] == 404
    assert (await api.call("GET", f"/courses/{cid}/learners/{ann.id}/progress", bob))[0] == 403
    assert (await api.call("GET", f"/courses/{cid}/learners?cursor=garbage", teacher))[0] == 400


# --- continue where you left off -----------------------------------------------------------------


def _state(position: int, completed: bool, minute: int | None, at: float = 0.0) -> LectureState:
    when = datetime(2026, 1, 1, 12, minute, tzinfo=UTC) if minute is not None else None
    return LectureState(uuid.uuid4(), f"L{position}", position, 60.0, at, completed, when)


def test_resume_point_is_the_last_unfinished_lecture_else_the_next_unfinished() -> None:
    fresh = [_state(0, False, None), _state(1, False, None)]
    assert resume_point(fresh) is fresh[0]
    midway = [_state(0, True, 1), _state(1, False, 3, at=12.0), _state(2, False, 2)]
    assert resume_point(midway) is midway[1]
    finished_last = [_state(0, False, None), _state(1, True, 5), _state(2, False, None)]
    assert resume_point(finished_last) is finished_last[2]
    wrap = [_state(0, False, 1, at=4.0), _state(1, True, 2), _state(2, True, 5)]
    assert resume_point(wrap) is wrap[0]
    assert resume_point([_state(0, True, 1)]) is None
    assert resume_point([]) is None


async def test_continue_lists_unfinished_courses_by_last_activity_with_where_to_resume(api: ApiClient) -> None:
    teacher, learner = await api.user("instructor"), await api.user()
    first, first_lectures = await course_with(api, teacher, "First", (40.0, 40.0))
    second, second_lectures = await course_with(api, teacher, "Second", (0.0, 40.0))
    done, done_lectures = await course_with(api, teacher, "Done", (0.0,))
    untouched, untouched_lectures = await course_with(api, teacher, "Untouched", (40.0,))
    for course in (untouched, first, second, done):
        await ok(api, "POST", f"/courses/{course['id']}/enroll", learner)
    await report(api, learner, first_lectures[0], 12.0)
    await report(api, learner, second_lectures[0], 0.0)  # completed: resume at the next lecture
    await report(api, learner, done_lectures[0], 0.0)  # the whole course done: not listed

    items = (await ok(api, "GET", "/me/continue", learner))["items"]
    assert [(i["course_title"], i["lecture_id"], i["position_s"]) for i in items] == [
        ("Second", second_lectures[1]["id"], 0.0),
        ("First", first_lectures[0]["id"], 12.0),
        ("Untouched", untouched_lectures[0]["id"], 0.0),
    ]
    assert items[0]["completed_lectures"] == 1 and items[0]["percent"] == 50.0
    assert items[2]["last_activity_at"] is None

    # Touching First again puts it on top; an archived course stays (its learners keep it).
    await report(api, learner, first_lectures[0], 20.0)
    await ok(api, "POST", f"/courses/{first['id']}/archive", teacher)
    items = (await ok(api, "GET", "/me/continue?limit=1", learner))["items"]
    assert [(i["course_title"], i["position_s"]) for i in items] == [("First", 20.0)]
    assert (await api.call("GET", "/me/continue?limit=0", learner))[0] == 400
    assert (await ok(api, "GET", "/me/continue", teacher))["items"] == []
    assert (await api.call("GET", "/me/continue"))[0] == 401


async def test_course_changes_are_rate_limited_per_owner_from_the_audit_log(
    aiohttp_client: Any, database_url: str, tmp_path: Path
) -> None:
    app = create_app(make_settings(database_url, tmp_path, course_changes_per_hour=3))
    api = ApiClient(await aiohttp_client(app))
    teacher, admin = await api.user("instructor"), await api.user("admin")
    course, _ = await course_with(api, teacher, "Busy")  # publishing counts: 1
    other, _ = await course_with(api, teacher, "Other", publish=False)
    cid = course["id"]
    await ok(api, "POST", f"/courses/{cid}/unpublish", teacher)  # 2
    await ok(api, "POST", f"/courses/{cid}/unpublish", teacher)  # a no-op changes nothing and is not counted
    await ok(api, "POST", f"/courses/{cid}/publish", teacher)  # 3
    resp = await api.http.post(f"/api/v1/courses/{cid}/archive", headers=teacher.headers)
    assert resp.status == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 3600
    assert (await resp.json())["error"]["code"] == "rate_limited"
    status, _ = await api.call("PUT", f"/courses/{other['id']}/prerequisites", teacher, json={"course_ids": [cid]})
    assert status == 429  # per owner, not per course
    assert (await ok(api, "GET", f"/courses/{cid}", teacher))["status"] == "published"
    # Admins are not limited.
    assert (await ok(api, "POST", f"/courses/{cid}/archive", admin))["status"] == "archived"
