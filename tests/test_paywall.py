"""Priced courses: bought once (leaving and coming back never pays twice), and their media only for those
who may play them (enrolled learners, the course's owner, admins)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from core_api.context import CORE
from tests.conftest import Actor, ApiClient

PRICE = 60


async def ok(api: ApiClient, method: str, path: str, actor: Actor | None = None, **kw: Any) -> Any:
    status, body = await api.call(method, path, actor, **kw)
    assert status < 300, (method, path, status, body)
    return body


async def priced_course(api: ApiClient, teacher: Actor, lectures: int = 2, price: int = PRICE) -> tuple[Any, list[Any]]:
    course = await ok(api, "POST", "/courses", teacher, json={"title": "Paid algorithms"})
    made = []
    for n in range(lectures):
        body = {"title": f"Part {n}", "media_kind": "video", "media_url": f"https://cdn.example.com/paid-{n}.mp4",
                "duration_s": 60.0}  # fmt: skip
        made.append(await ok(api, "POST", f"/courses/{course['id']}/lectures", teacher, json=body))
    await ok(api, "POST", f"/courses/{course['id']}/publish", teacher)
    await ok(api, "PUT", f"/courses/{course['id']}/price", teacher, json={"coins": price})
    return course, made


async def give_coins(api: ApiClient, who: Actor, coins: int) -> None:
    """Seed a wallet (a prize, as far as the ledger is concerned)."""
    await api.app[CORE].pool.execute(
        "INSERT INTO wallet_entries (id, user_id, amount, reason, ref, source) VALUES ($1, $2, $3, 'test', $4, 'test')",
        uuid.uuid4(), uuid.UUID(who.id), coins, f"test:{uuid.uuid4()}",
    )  # fmt: skip


async def balance(api: ApiClient, who: Actor) -> int:
    return int((await ok(api, "GET", "/me/wallet", who))["balance"])


# --- buying, leaving, coming back ----------------------------------------------------------------


async def test_one_who_paid_left_and_comes_back_is_enrolled_again_without_paying_twice(api: ApiClient) -> None:
    teacher, learner = await api.user("instructor"), await api.user()
    course, _ = await priced_course(api, teacher)
    await give_coins(api, learner, 2 * PRICE)
    bought = await ok(api, "POST", f"/courses/{course['id']}/buy", learner)
    assert (bought["coins_paid"], bought["balance"], bought.get("paid_before", False)) == (PRICE, PRICE, False)

    # Leave, then buy again: back in (this answered 500 before), and nothing more is taken.
    assert (await api.call("DELETE", f"/courses/{course['id']}/enroll", learner))[0] == 204
    status, again = await api.call("POST", f"/courses/{course['id']}/buy", learner)
    assert status == 201, again
    assert (again["coins_paid"], again["balance"], again["paid_before"]) == (0, PRICE, True)
    assert [e["course_id"] for e in (await ok(api, "GET", "/me/enrollments", learner))["items"]] == [course["id"]]

    # Leave, then enroll the free way: a course once paid for is open to its buyer.
    assert (await api.call("DELETE", f"/courses/{course['id']}/enroll", learner))[0] == 204
    status, enrollment = await api.call("POST", f"/courses/{course['id']}/enroll", learner)
    assert status == 201, enrollment
    # Buying while enrolled is refused, and several tries at once never charge anyone twice.
    results = await asyncio.gather(*(api.call("POST", f"/courses/{course['id']}/buy", learner) for _ in range(4)))
    assert {status for status, _ in results} == {409}
    assert await balance(api, learner) == PRICE
    entries = (await ok(api, "GET", "/me/wallet", learner))["entries"]
    assert [e["amount"] for e in entries if e["amount"] < 0] == [-PRICE]
    # The audit log has every step: purchases (with what was paid), leaving, the free enrollment.
    admin = await api.user("admin")
    log = (await ok(api, "GET", f"/audit?actor_id={learner.id}&action=course&limit=50", admin))["items"]
    steps = [(e["action"], e["details"].get("coins")) for e in sorted(log, key=lambda e: e["created_at"])]
    assert steps == [
        ("course.purchased", PRICE), ("course.left", None), ("course.purchased", 0), ("course.left", None),
        ("course.enrolled", None),
    ]  # fmt: skip


async def test_someone_who_never_paid_still_cannot_enroll_in_a_priced_course_for_free(api: ApiClient) -> None:
    teacher, learner, buyer = await api.user("instructor"), await api.user(), await api.user()
    course, _ = await priced_course(api, teacher)
    await give_coins(api, buyer, PRICE)
    await ok(api, "POST", f"/courses/{course['id']}/buy", buyer)  # another learner's purchase opens nothing
    status, body = await api.call("POST", f"/courses/{course['id']}/enroll", learner)
    assert (status, body["error"]["code"], body["error"]["details"]["price"]) == (409, "conflict", PRICE)
    status, body = await api.call("POST", f"/courses/{course['id']}/buy", learner)
    assert (status, body["error"]["code"]) == (409, "conflict")  # no coins
    assert await balance(api, learner) == 0


# --- lectures over REST --------------------------------------------------------------------------


async def test_a_priced_course_lists_its_lectures_to_all_but_plays_them_only_for_its_learners(api: ApiClient) -> None:
    teacher, buyer, outsider = await api.user("instructor"), await api.user(), await api.user()
    admin = await api.user("admin")
    course, lectures = await priced_course(api, teacher)
    await give_coins(api, buyer, PRICE)
    await ok(api, "POST", f"/courses/{course['id']}/buy", buyer)

    listing = await ok(api, "GET", f"/courses/{course['id']}/lectures", outsider)
    assert [lec["title"] for lec in listing["items"]] == ["Part 0", "Part 1"]
    assert [lec["duration_s"] for lec in listing["items"]] == [60.0, 60.0]
    for lec in listing["items"]:
        assert lec["media_url"] is None and lec["locked"] is True
        assert "buy" in lec["locked_reason"] and str(PRICE) in lec["locked_reason"]
    one = await ok(api, "GET", f"/lectures/{lectures[0]['id']}", outsider)
    assert (one["media_url"], one["locked"]) == (None, True)

    for entitled in (buyer, teacher, admin):
        listing = await ok(api, "GET", f"/courses/{course['id']}/lectures", entitled)
        assert [lec["media_url"] for lec in listing["items"]] == [lec["media_url"] for lec in lectures]
        assert not any(lec["locked"] for lec in listing["items"])
        one = await ok(api, "GET", f"/lectures/{lectures[1]['id']}", entitled)
        assert (one["media_url"], one["locked"], one["locked_reason"]) == (lectures[1]["media_url"], False, None)

    # Leaving closes the media again (coming back is free, see above); a free course stays open to all.
    assert (await api.call("DELETE", f"/courses/{course['id']}/enroll", buyer))[0] == 204
    assert (await ok(api, "GET", f"/lectures/{lectures[0]['id']}", buyer))["media_url"] is None
    await ok(api, "PUT", f"/courses/{course['id']}/price", teacher, json={"coins": 0})
    assert (await ok(api, "GET", f"/lectures/{lectures[0]['id']}", outsider))["media_url"] == lectures[0]["media_url"]


async def test_a_course_shows_its_price_up_front_in_the_catalogue_and_on_its_page(api: ApiClient) -> None:
    teacher, learner = await api.user("instructor"), await api.user()
    course, _ = await priced_course(api, teacher)
    free = await ok(api, "POST", "/courses", teacher, json={"title": "Free algorithms"})
    page = await ok(api, "GET", f"/courses/{course['id']}", learner)
    assert page["price_coins"] == PRICE  # a learner sees what it costs before trying to buy it
    mine = await ok(api, "GET", "/courses", teacher, params={"mine": "true"})
    listed = {c["id"]: c["price_coins"] for c in mine["items"]}
    assert listed == {course["id"]: PRICE, free["id"]: None}
    # Made free again: no price.
    await ok(api, "PUT", f"/courses/{course['id']}/price", teacher, json={"coins": 0})
    assert (await ok(api, "GET", f"/courses/{course['id']}", learner))["price_coins"] is None
