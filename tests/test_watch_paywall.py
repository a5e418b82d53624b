"""Watch parties and priced courses: a paid lecture is put up only by someone entitled to play it, and a
viewer who is not entitled gets the party's state without its URL — in broadcasts, on joining, in acks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from realtime.app import create_app
from tests.conftest import ApiClient, make_settings
from tests.nodes import Client
from tests.test_paywall import PRICE, give_coins, priced_course
from tests.test_paywall import ok as rest_ok
from tests.watch_helpers import VIDEO, Open, fails, ok, state_with, watch_room


@pytest.fixture
async def api(aiohttp_client: Any, database_url: str, tmp_path: Path) -> ApiClient:
    return ApiClient(await aiohttp_client(create_app(make_settings(database_url, tmp_path))))


def urls_seen(client: Client) -> str:
    """Everything the client was sent, as one string to search for a URL."""
    return json.dumps(client.inbox.events)


async def test_a_paid_lecture_plays_only_for_viewers_entitled_to_it(api: ApiClient, viewers: Open) -> None:
    teacher, buyer, outsider, late = (await api.user("instructor"), await api.user(), await api.user(),
                                      await api.user())  # fmt: skip
    course, lectures = await priced_course(api, teacher)
    paid_url = lectures[0]["media_url"]
    await give_coins(api, buyer, PRICE)
    await rest_ok(api, "POST", f"/courses/{course['id']}/buy", buyer)
    room = await watch_room(api, teacher, buyer, outsider, late)
    t, b, o = await viewers(teacher, room), await viewers(buyer, room), await viewers(outsider, room)
    lecture = {"lecture_id": lectures[0]["id"]}

    # Whoever may not play it cannot put it up (every member may, in `everyone` mode).
    await ok(t, "watch:control", {"room_id": room, "mode": "everyone"})
    message = await fails(o, "watch:load", {"room_id": room, "media": lecture}, "forbidden")
    assert "buy" in message
    await fails(o, "watch:queue", {"room_id": room, "media": lecture}, "forbidden")

    # The buyer puts it up and queues a plain URL after it; the owner's and the buyer's views carry the URL.
    loaded = (await ok(b, "watch:load", {"room_id": room, "media": lecture}))["state"]
    assert (loaded["media"]["url"], loaded["media"]["locked"]) == (paid_url, False)
    queued = (await ok(b, "watch:queue", {"room_id": room, "media": VIDEO}))["state"]
    version = queued["version"]
    for entitled in (t, b):
        got = await entitled.inbox.wait_for("watch:state", state_with(room, version=version))
        assert got["media"]["url"] == paid_url and got["playlist"][0]["media"]["url"] == paid_url

    # The outsider follows the same party: same item, timeline and playlist, but no URL of the paid lecture.
    got = await o.inbox.wait_for("watch:state", state_with(room, version=version))
    assert got["media"]["lecture_id"] == lectures[0]["id"] and got["media"]["title"] == "Part 0"
    assert got["media"]["url"] is None and got["media"]["locked"] is True and got["media"]["locked_reason"]
    assert [item["media"]["url"] for item in got["playlist"]] == [None, VIDEO["url"]]
    synced = (await ok(o, "watch:sync", {"room_id": room}))["state"]
    assert synced["media"]["url"] is None
    played = (await ok(o, "watch:play", {"room_id": room}))["state"]  # their own command's answer, too
    assert played["playing"] is True and played["media"]["url"] is None
    await b.inbox.wait_for("watch:state", state_with(room, version=played["version"]))
    assert b.inbox.of("watch:state")[-1]["media"]["url"] == paid_url

    # Joining late: the state sent at once has no URL either.
    lt = await viewers(late, room)
    joined = await lt.inbox.wait_for("watch:state", state_with(room))
    assert joined["version"] == played["version"] and joined["media"]["url"] is None

    # Nothing any non-entitled viewer was ever sent holds the URL.
    await o.inbox.wait_for("watch:state", state_with(room, version=played["version"]))
    assert paid_url not in urls_seen(o) and paid_url not in urls_seen(lt)

    # Buying opens it: the next answer carries the URL.
    await give_coins(api, outsider, PRICE)
    await rest_ok(api, "POST", f"/courses/{course['id']}/buy", outsider)
    assert (await ok(o, "watch:sync", {"room_id": room}))["state"]["media"]["url"] == paid_url
