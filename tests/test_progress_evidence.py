"""Certificates need watching: a lecture completes from what the server saw, not from a client's word.

These tests run with the real default ``STUDYHALL_PROGRESS_MAX_RATE`` (2), on lectures a second or two
long, so what they watch takes real time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from core_api import watching
from core_api.context import CORE
from core_api.settings import Settings
from realtime.app import create_app
from realtime.sockets import SOCKETS
from tests.conftest import Actor, ApiClient, make_settings
from tests.learning_helpers import report, watch
from tests.nodes import Client
from tests.watch_helpers import Open, ok, watch_room
from watch_party.service import WATCH

REAL_RATE: float = Settings.model_fields["progress_max_rate"].default


@pytest.fixture
async def api(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    settings = make_settings(database_url, tmp_path, progress_max_rate=REAL_RATE, watch_upkeep_s=0.1)
    return ApiClient(await aiohttp_client(create_app(settings)))


async def course_with(api: ApiClient, owner: Actor, *durations: float) -> tuple[dict[str, Any], list[Any]]:
    status, course = await api.call("POST", "/courses", owner, json={"title": "Watched for real"})
    assert status == 201, course
    lectures = []
    for n, duration in enumerate(durations):
        body = {"title": f"L{n}", "media_kind": "video", "media_url": f"https://example.com/{n}.mp4",
                "duration_s": duration}  # fmt: skip
        status, lecture = await api.call("POST", f"/courses/{course['id']}/lectures", owner, json=body)
        assert status == 201, lecture
        lectures.append(lecture)
    assert (await api.call("POST", f"/courses/{course['id']}/publish", owner))[0] == 200
    return course, lectures


async def learner_of(api: ApiClient, course: dict[str, Any]) -> Actor:
    learner = await api.user()
    assert (await api.call("POST", f"/courses/{course['id']}/enroll", learner))[0] == 201
    return learner


async def progress_of(api: ApiClient, learner: Actor, course: dict[str, Any]) -> Any:
    status, progress = await api.call("GET", f"/courses/{course['id']}/progress", learner)
    assert status == 200, progress
    return progress


async def certificates_of(api: ApiClient, learner: Actor) -> list[Any]:
    status, page = await api.call("GET", "/me/certificates", learner)
    assert status == 200, page
    return list(page["items"])


# --- position reports ----------------------------------------------------------------------------


async def test_saying_completed_or_jumping_to_the_end_completes_nothing(api: ApiClient) -> None:
    """`PUT .../progress {completed: true, position_s: 0}` on every lecture issued the certificate."""
    owner = await api.user("instructor")
    course, lectures = await course_with(api, owner, 600.0, 600.0, 600.0)
    learner = await learner_of(api, course)
    for lecture in lectures:
        for position in (0.0, 600.0, 0.0, 600.0):  # "done", the end at once, back and forth
            status, out = await api.call(
                "PUT", f"/lectures/{lecture['id']}/progress", learner, json={"position_s": position, "completed": True}
            )
            assert status == 200, out
            assert out["lecture"]["completed"] is False and out["course"]["certificate"] is None
    progress = await progress_of(api, learner, course)
    assert progress["completed_lectures"] == 0 and progress["completed_at"] is None
    assert [lec["watched_s"] for lec in progress["lectures"]] == [0.0, 0.0, 0.0]
    assert [lec["position_s"] for lec in progress["lectures"]] == [600.0, 600.0, 600.0]  # the resume point moves
    assert await certificates_of(api, learner) == []


async def test_reports_that_take_real_time_complete_a_lecture_and_the_course(api: ApiClient) -> None:
    owner = await api.user("instructor")
    course, lectures = await course_with(api, owner, 1.0, 0.6)
    learner = await learner_of(api, course)
    first = await watch(api, learner, lectures[0], speed=1.0)  # as a player does, in real time
    assert first["lecture"]["completed"] is True and first["lecture"]["watched_s"] == 1.0
    assert first["course"]["certificate"] is None
    # Skipping ahead a lot is not watching: the rest of the lecture still has to be seen.
    out = await report(api, learner, lectures[1], 0.0)
    out = await report(api, learner, lectures[1], 0.5)  # at once: faster than anybody can watch
    assert out["lecture"]["watched_s"] == 0.0 and out["lecture"]["completed"] is False
    last = await watch(api, learner, lectures[1], start=0.0, speed=1.0)
    assert last["lecture"]["completed"] is True
    assert last["course"]["certificate"] is not None and last["course"]["percent"] == 100.0
    assert [c["course_id"] for c in await certificates_of(api, learner)] == [course["id"]]


async def test_watching_many_lectures_at_once_is_credited_no_faster_than_one_person_can_watch(
    api: ApiClient,
) -> None:
    """Open every lecture, wait, report the end of each: per lecture plausible, together impossible."""
    owner = await api.user("instructor")
    course, lectures = await course_with(api, owner, *([0.5] * 6))
    learner = await learner_of(api, course)
    began = time.monotonic()
    for lecture in lectures:
        await report(api, learner, lecture, 0.0)
    await asyncio.sleep(0.3)  # the wall time being measured: enough for one 0.5 s lecture at 2x
    answers = await asyncio.gather(*(report(api, learner, lecture, 0.5) for lecture in lectures))
    window = time.monotonic() - began  # contains the server's view of the same exchange
    credited = sum(out["lecture"]["watched_s"] for out in answers)
    assert credited >= 0.5  # the first one counted
    assert credited <= REAL_RATE * window + watching.EPSILON
    if REAL_RATE * window < 0.5 * len(lectures):
        assert sum(out["lecture"]["completed"] for out in answers) < len(lectures)
        assert await certificates_of(api, learner) == []


# --- watch parties -------------------------------------------------------------------------------


async def test_watching_together_completes_a_lecture_from_the_rooms_own_timeline(api: ApiClient, viewers: Open) -> None:
    teacher = await api.user("instructor")
    course, [lecture] = await course_with(api, teacher, 3.0)
    learner, idler = await learner_of(api, course), await learner_of(api, course)
    room = await watch_room(api, teacher, learner, idler)
    t, ln, idle = await viewers(teacher, room), await viewers(learner, room), await viewers(idler, room)
    state = (await ok(t, "watch:load", {"room_id": room, "media": {"lecture_id": lecture["id"]}}))["state"]

    async def beat(client: Client, position: float, playing: bool, version: int) -> None:
        payload = {"room_id": room, "position": position, "playing": playing, "client_time": time.time(),
                   "version": version}  # fmt: skip
        await ok(client, "watch:heartbeat", payload)

    # While the room is paused, heartbeats that say "playing, moving on" are no evidence.
    for position in (0.0, 1.0, 2.0, 3.0):
        await beat(ln, position, True, state["version"])
    await ok(t, "watch:rate", {"room_id": room, "rate": REAL_RATE})
    state = (await ok(t, "watch:play", {"room_id": room}))["state"]

    def room_position() -> float:
        elapsed = max(0.0, time.time() - float(state["server_time"]))
        return min(3.0, float(state["position"]) + float(state["rate"]) * elapsed)

    # The learner plays along; the idler is in the room with their player paused at the start.
    ends_at = state["server_time"] + 3.0 / state["rate"]
    while time.time() < ends_at + 0.1:
        await beat(ln, room_position(), True, state["version"])
        await beat(idle, 0.0, False, state["version"])
        await asyncio.sleep(0.05)  # a player's heartbeat interval: the room's time passing is the point
    await beat(ln, 3.0, False, state["version"])  # the player stopped at the end
    await api.app[SOCKETS].services[WATCH].settle()

    mine = (await progress_of(api, learner, course))["lectures"][0]
    assert mine["completed"] is True and mine["watched_s"] >= 0.9 * 3.0
    assert [c["course_id"] for c in await certificates_of(api, learner)] == [course["id"]]
    theirs = (await progress_of(api, idler, course))["lectures"][0]
    assert theirs["completed"] is False and theirs["watched_s"] == 0.0
    assert await certificates_of(api, idler) == []
    stored = await api.app[CORE].pool.fetchval(
        "SELECT cardinality(watched) FROM lecture_progress WHERE user_id = $1", uuid.UUID(learner.id)
    )
    assert stored == 2  # one merged interval, not a row per heartbeat


# --- the rules -----------------------------------------------------------------------------------


def test_stretches_merge_into_few_intervals_and_count_once() -> None:
    merged = watching.add([], [(0, 10), (20, 30), (5, 12), (12, 20)], max_intervals=8)
    assert merged == [(0, 30)] and watching.covered(merged) == 30
    assert watching.add([(0, 10)], [(0, 10)], max_intervals=8) == [(0, 10)]  # rewatching adds nothing
    specks = watching.add([], [(i, i + 0.5) for i in range(10)], max_intervals=4)
    assert len(specks) == 4  # what would make more separate intervals is not credited
    assert watching.unflatten(watching.flatten(merged)) == merged


def test_a_report_shows_a_stretch_only_when_it_moved_forward_plausibly() -> None:
    assert watching.report_stretch(10.0, 100.0, 30.0, 110.0, 2.0) == (10.0, 30.0)
    assert watching.report_stretch(10.0, 100.0, 31.0, 110.0, 2.0) is None  # faster than 2x
    assert watching.report_stretch(10.0, 100.0, 5.0, 110.0, 2.0) is None  # backwards
    assert watching.report_stretch(None, None, 5.0, 110.0, 2.0) is None  # a first report
    assert watching.charge(0.0, 100.0, 110.0, 20.0, 2.0) == 110.0
    assert watching.charge(110.0, 100.0, 110.0, 20.0, 2.0) is None  # that time was spent on another lecture
    assert watching.is_complete(90.0, 100.0, 0.9) and not watching.is_complete(89.0, 100.0, 0.9)
    assert watching.is_complete(0.0, 0.0, 0.9)  # no duration: opening it is all there is
